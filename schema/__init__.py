"""TFLite flatbuffer schema (installed as qengine.schema)."""
