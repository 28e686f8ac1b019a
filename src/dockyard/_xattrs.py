"""Which extended attributes are image content: one rule for the layers a build writes, the
files a COPY copies and the selection digest that keys it (so a key holds exactly what the
output holds)."""

from __future__ import annotations

__all__ = ["keep_xattr"]


def keep_xattr(name: str) -> bool:
    """Whether an extended attribute belongs in a layer.

    Kept: ``user.*``, ``trusted.*`` and ``security.capability`` (file capabilities, which a
    container's bounding set still limits). Dropped: overlayfs's own bookkeeping
    (``trusted.overlay.*``, ``user.overlay.*``), SELinux labels and the other
    ``security.*`` attributes, and ``system.*`` (ACLs), which are host policy rather than
    image content (containerd and BuildKit's content hash draw the same line)."""
    if name.startswith(("trusted.overlay.", "user.overlay.")):
        return False
    if name.startswith("security."):
        return name == "security.capability"
    return name.startswith(("user.", "trusted."))
