"""The offline demo: its procedurally drawn domains (`domains`), the task stream and pre-training mixture drawn from
them (`stream`), and the tiny CLIP pre-trained for it (`pretrain`, shipped in `assets/`)."""
