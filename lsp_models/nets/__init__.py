"""The networks, each a ``XxxConfig`` dataclass beside its ``nn.Module``."""
