"""Instrument emulators of the twin bench: SCPI engine, transports, one emulator per instrument."""
