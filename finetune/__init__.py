"""Fine-tuning of vision-language models on product catalogues (README: the finetune/ module map)."""
from .torchvision_guard import set_aside_broken_torchvision

# Before anything imports transformers, which would import a broken torchvision on the way to any model.
set_aside_broken_torchvision()
