"""Pretrained models from registries (TLT's `tlt-pull` / NGC, done openly), behind `tlkit model ...` and
`train_config.pretrained_model_path`:

- `gluoncv://NAME`: GluonCV's model store (`gluoncv_store`): its names and sha1 checksums, files in
  `$MXNET_HOME/models` where GluonCV itself finds them;
- `registry://NAME[:VERSION]`: a team registry (`team`): a directory or an HTTP(S) URL with index.json;
- the offline sets shipped on PyPI (`imagenet` for efficientnet_lite0/1/2: `tlkit.backbones.catalog`).

Transfers (`download`) resume after a cut connection and refuse files whose checksum does not match.
Nothing here imports MXNet.
"""
