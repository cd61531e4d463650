"""In-domain self-supervised pretraining (stage I of the VAE study, arXiv 2505.16773): a VAE whose
encoder is a registry backbone's trunk, trained on a data set's training images without labels. Its
encoder becomes the starting weights of a classifier through ``weights=ssl:<encoder.pt or MLflow
run id>`` (stage II).

- ``vae``: the model, the decoder's size rule, the ELBO terms and the KL warm-up schedule;
- ``config``: pretraining parameters and their checks;
- ``train``: the training loop (images only) and the encoder snapshots;
- ``encoder``: ``encoder.pt`` + ``encoder.json`` on disk, resolving ``ssl:`` references, and the
  ``ssl:`` weight source (registered with ``tuner.models.weights``' registry);
- ``request``: what both pretraining commands are asked and give back (request, outcome, naming,
  tracking store, output folder);
- ``run``: ``medtune pretrain`` (one run, MLflow); ``search``: ``medtune pretrain --search`` (Ray Tune,
  through the search's cluster start-up, Tuner build and resilient MLflow logger);
- ``cli``: the command line.
"""

from tuner.pretrain.config import PRETRAIN_DEFAULTS, make_pretrain_config
from tuner.pretrain.encoder import ENCODER_FILE, META_FILE, resolve_ssl_encoder, save_encoder
from tuner.pretrain.vae import VAE, build_trunk, decoder_geometry, kl_beta, vae_loss, vae_terms

__all__ = ["ENCODER_FILE", "META_FILE", "PRETRAIN_DEFAULTS", "VAE", "build_trunk", "decoder_geometry", "kl_beta",
           "make_pretrain_config", "resolve_ssl_encoder", "save_encoder", "vae_loss", "vae_terms"]
