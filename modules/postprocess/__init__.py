"""The Extras task (AUTOMATIC1111's postprocessing): upscale images with upscaler models, outside generation."""
