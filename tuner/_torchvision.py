"""Import torchvision on every install we support, including CPU torch with a CUDA torchvision wheel.

``torchvision==0.28.0`` is published only as a CUDA build. Installed next to the CPU build of
``torch==2.13.0`` its compiled extension fails to load, so the operator schemas it would have
registered (``torchvision::nms``, ``torchvision::qnms``) are missing, and ``import torchvision`` dies
while registering fake kernels for them. Defining the two schemas (no kernels) is enough for the
models and transforms medtune uses; torchvision's C++ ops and image decoding stay unavailable, which
is why medtune reads images with Pillow. On a normal install the first import succeeds and this
module does nothing else.

Import torchvision as ``from tuner._torchvision import torchvision`` and reach its parts as attributes
(``torchvision.models``, ``torchvision.transforms.v2``): a direct ``from torchvision... import`` placed
before this module runs would fail.
"""

from __future__ import annotations

import sys

import torch

_MISSING_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
# Kept alive for the life of the process: a torch.library.Library deregisters its definitions
# when it is garbage-collected.
_fragment: torch.library.Library | None = None


def _import_torchvision():
    """torchvision, imported once for the whole process: the normal import where it works, else again
    after defining the schemas its broken extension would have registered (see the module
    docstring), so that the failure is handled in one place and not at every import site."""
    global _fragment
    try:
        import torchvision
    except RuntimeError as error:
        if "torchvision::" not in str(error):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _fragment = torch.library.Library("torchvision", "FRAGMENT")
        for schema in _MISSING_SCHEMAS:
            _fragment.define(schema)
        import torchvision
    import torchvision.transforms.v2  # noqa: F401  (so torchvision.transforms.v2 is an attribute)
    return torchvision


torchvision = _import_torchvision()  # the one name to import from here
