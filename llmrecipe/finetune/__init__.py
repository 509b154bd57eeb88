"""Fine-tuning data: chat examples rendered through a template (sft), labelled texts (classify), and the dataset
files a finetune step reads. The executors that train on them are in llmrecipe/steps/finetune/."""
