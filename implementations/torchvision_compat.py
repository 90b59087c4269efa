"""Import torchvision on a CPU-only torch build.

The torchvision 0.28.0 wheel is built against CUDA torch. On the CPU build of torch 2.13.0
its compiled ops library does not load, and `import torchvision` then fails while
registering fake kernels for `torchvision::nms` and `torchvision::qnms`, which nobody has
defined. Defining those two schemas first lets the import finish; transforms and datasets
(all we use) do not need the compiled ops.
"""

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


def _define_missing_ops() -> None:
    missing = [name for name in _SCHEMAS if not hasattr(torch.ops.torchvision, name)]
    library = torch.library.Library("torchvision", "FRAGMENT")
    for name in missing:
        library.define(_SCHEMAS[name])
    _define_missing_ops.library = library  # keep the registration alive


try:
    import torchvision  # noqa: F401
except RuntimeError as error:
    if "torchvision::" not in str(error):
        raise
    _define_missing_ops()
    import sys

    for module in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[module]
    import torchvision  # noqa: F401,F811
