from ..errors import CheckpointError

__all__ = ["CheckpointError"]
