"""Numbers every part agrees on: the normalisation statistics the released models were trained with."""

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
INCEPTION_MEAN = (0.5, 0.5, 0.5)  # pixels in [-1, 1]: SigLIP, ALIGN's EfficientNet
INCEPTION_STD = (0.5, 0.5, 0.5)
