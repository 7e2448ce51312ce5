"""Bad input: every rejection of the wire contract, and fuzzing of both transports."""
