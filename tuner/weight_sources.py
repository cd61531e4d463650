"""Every weight source, registered: the ones ``tuner.models.weights`` ships and the ``ssl:`` encoder
source the pretraining side registers (``tuner.models`` must never import pretraining code, so the two
meet here, above both).

Check and resolve ``weights`` values through this module wherever every form must be known: the
config checks (``tuner.config``) and the search's driver-side checks import it, so a checked config
never misses the ``ssl:`` form because nothing happened to import the pretraining package first.
"""

from tuner.models.weights import (
    WeightSource,
    check_weights,
    find_weight_source,
    load_trunk_weights,
    preprocessing_for,
    weight_forms,
    weights_file,
)
from tuner.pretrain.encoder import SSL_PREFIX, SslEncoder

__all__ = ["SSL_PREFIX", "SslEncoder", "WeightSource", "check_weights", "find_weight_source", "load_trunk_weights",
           "preprocessing_for", "weight_forms", "weights_file"]
