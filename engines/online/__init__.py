"""The online recogniser: model, decoder and endpointing as one synchronous object (no asyncio)."""
