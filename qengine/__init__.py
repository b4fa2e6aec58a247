"""qengine: post-training quantization and a bit-exact runtime for TFLite models."""
