"""Fine-tuning a trained model: chat/instruction tuning (sft), classification, continued pre-training, LoRA."""
