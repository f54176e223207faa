"""The offline demo: its procedurally drawn task stream (`domains`) and the tiny CLIP pre-trained for it
(`pretrain`)."""
