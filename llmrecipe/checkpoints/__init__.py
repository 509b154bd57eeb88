"""Pre-trained Hugging Face checkpoints: found and checked at plan time without torch (`locate.py`), loaded shard by
shard into a model built on the meta device (`load.py`)."""
