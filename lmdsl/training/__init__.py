"""Fine-tuning the embedded model: LoRA on CPU with transformers + peft, written as a llama.cpp adapter.

`chat` renders training text with the model's own chat template (what llama.cpp renders at
inference); `lora` trains and writes the adapter. torch, transformers and peft load only
when training starts (the `finetune` extra).
"""
