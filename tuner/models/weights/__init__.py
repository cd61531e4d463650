"""Where a trunk's starting weights come from, behind one registry of weight sources.

Shipped here: ``none``, ``imagenet`` (torchvision's enums, cached under ``$TORCH_HOME/hub/checkpoints/``; on a
``timm/<model>`` backbone, timm's pretrained weights from Hugging Face's or torch hub's cache),
``radimagenet`` (``$MEDTUNE_WEIGHTS_DIR/radimagenet/``) and the path of a state-dict file. The
``ssl:<encoder file or MLflow run id>`` form is registered by the pretraining side, which owns its
encoders (this package never imports it); ``tuner.weight_sources`` imports both, and the config checks
go through it, so every checked config knows every form.

Each source declares how it recognises a value, the file it needs, how it fills a trunk, and the
preprocessing its weights expect (``WeightSource``). Every file is loaded with ``weights_only=True``
and must fill every trunk tensor. Add a source with one ``register_weight_source`` call.
"""

from tuner.models.weights._builtin import (
    STATE_DICT_SUFFIXES,
    NoWeights,
    RadImageNet,
    StateDictFile,
    TorchvisionImagenet,
    imagenet_file,
    torchvision_preprocessing,
)
from tuner.models.weights._source import (
    WEIGHT_SOURCES,
    WEIGHTS_DIR_ENV,
    WeightSource,
    check_weights,
    find_weight_source,
    load_trunk_weights,
    preprocessing_for,
    register_weight_source,
    weight_forms,
    weights_dir,
    weights_file,
)
from tuner.models.weights._state_dict import (
    describe_mismatch,
    imported_preprocessing,
    load_error_text,
    load_into_trunk,
    load_state_into_trunk,
    metadata_path,
    read_state_file,
    remap_keys,
)
from tuner.models.weights._timm import TimmPretrained

__all__ = ["STATE_DICT_SUFFIXES", "WEIGHTS_DIR_ENV", "WEIGHT_SOURCES", "NoWeights", "RadImageNet", "StateDictFile",
           "TimmPretrained", "TorchvisionImagenet", "WeightSource", "check_weights", "describe_mismatch",
           "find_weight_source", "imagenet_file", "imported_preprocessing", "load_error_text", "load_into_trunk",
           "load_state_into_trunk",
           "load_trunk_weights", "metadata_path", "preprocessing_for", "read_state_file", "register_weight_source",
           "remap_keys", "torchvision_preprocessing", "weight_forms", "weights_dir", "weights_file"]
