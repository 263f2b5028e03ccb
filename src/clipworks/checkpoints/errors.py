class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the model; the message names the file and the key."""
