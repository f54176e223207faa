"""`mtil prepare NAME --root R`: convert a dataset into mtil's prepared on-disk format (`R/<Name>/`).

Sources: torchvision (downloads where a network exists), the Hugging Face hub (`--source hf`), or a local
image folder / archive (`--from DIR`: one sub-folder per class, optionally inside `train/` + `test/`).
With `--captions FILE`, `--from DIR` is any folder of images and the result is a reference set for the distillation
baselines (`mtil.data.reference`: the images and the file's sentences, one per line).
`mtil prepare --list` shows the registered datasets and which are prepared under --root.
"""
from __future__ import annotations

import argparse
import logging

from ..errors import MtilError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        "  mtil prepare --list --root data\n"
        "  mtil prepare DTD --root data                      # torchvision download (needs a network)\n"
        "  mtil prepare Cars --root data --source hf         # from the Hugging Face hub\n"
        "  mtil prepare EuroSAT --root data --from EuroSAT.zip\n"
        "  mtil prepare MyBirds --root data --from birds/ --template 'a photo of a {}, a type of bird.'\n"
        "  mtil prepare Reference --root data --from imagenet/train --captions cc_captions.txt   # ZSCL's reference set\n"
        "folder layout: DIR/<class>/<image>, or DIR/train/<class>/<image> + DIR/test/<class>/<image>;\n"
        "class folders are class names (the registry's, or the source's own such as AnnualCrop, car_side,\n"
        "n01443537) or label indices; without a test folder a seeded 80/20 split is made (as ZSCL does).")
    parser.add_argument("name", nargs="?", help="dataset name (registered, e.g. DTD, Cars, or a new one with --from)")
    parser.add_argument("--root", default="data", help="data root; the dataset goes to ROOT/<Name> (default: data)")
    parser.add_argument("--list", action="store_true", help="list registered datasets and what is prepared under --root")
    parser.add_argument("--check", action="store_true",
                        help="check that ROOT/<Name> loads (both splits, class names) and is what mtil prepare "
                        "recorded (row counts, class list, content hash) instead of preparing it")
    parser.add_argument("--from", dest="src", metavar="DIR", help="local image folder, archive, or torchvision root")
    parser.add_argument("--split-from", metavar="FILE",
                        help="JSON {\"train\": [...], \"test\": [...]} of image paths relative to --from "
                             "(or [path, label, ...] entries)")
    parser.add_argument("--source", choices=("auto", "folder", "torchvision", "hf"), default="auto",
                        help="where to read from (auto: --from if given, else the dataset's default source)")
    parser.add_argument("--hf", dest="hf_repo", metavar="REPO", help="Hugging Face dataset repository (--source hf)")
    parser.add_argument("--hf-config", metavar="NAME", help="configuration of the Hugging Face dataset")
    parser.add_argument("--download-dir", metavar="DIR",
                        help="where torchvision downloads go (default: ROOT/.downloads; kept for re-use)")
    parser.add_argument("--cache-dir", metavar="DIR", help="Hugging Face datasets cache (default: HF's)")
    parser.add_argument("--max-per-class", type=int, metavar="N", help="keep at most N images per class and split "
                        "(with --captions: per folder, e.g. an ImageNet subset)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing ROOT/<Name>")
    parser.add_argument("--index-base", type=int, choices=(0, 1), default=0,
                        help="numeric class folders are label indices counted from 0 (default) or 1")
    parser.add_argument("--train-fraction", type=float, default=0.8,
                        help="training share of a seeded split when the source has no test split (default 0.8)")
    parser.add_argument("--seed", type=int, default=42, help="seed of that split (default 42, as ZSCL)")
    parser.add_argument("--file-order", choices=("sorted", "listing"), default="sorted",
                        help="SUN397's file order before that split: sorted by path (default, the same on every "
                             "machine) or listing, torchvision's (the file system's, as ZSCL ran it; docs/data.md)")
    parser.add_argument("--template", action="append", metavar="TEXT",
                        help="prompt template with {} for a new dataset (repeatable; the first trains)")
    parser.add_argument("--captions", metavar="FILE",
                        help="build a reference set for the distillation baselines (method zscl): every image under "
                             "--from (any layout) plus FILE's sentences (one per line, or a JSON list); "
                             "docs/baselines.md says which to use for the real benchmark")


def _list(root: str) -> int:
    from pathlib import Path

    from ..data import prepared, registry

    rootp = Path(root)
    rows = []
    for name in registry.names():
        info = registry.get(name)
        state = "no"
        if rootp.is_dir() and prepared.is_prepared(rootp, name):
            meta = prepared.read_meta(rootp, name) or {}
            counts = meta.get("rows") or {}
            state = "yes" + (f" ({', '.join(f'{k} {v}' for k, v in counts.items())})" if counts else "")
        alias = registry.aliases(name)
        rows.append((name, str(info.num_classes), state, ", ".join(alias[:3])))
    known = {registry.key(n) for n in registry.names()}
    for name in prepared.list_prepared(rootp) if rootp.is_dir() else []:
        if registry.key(name) in known or registry.resolve(name):
            continue
        try:
            info = prepared.load_info(rootp, name)
            classes = str(info.num_classes)
        except MtilError:
            classes = "?"
        meta = prepared.read_meta(rootp, name) or {}
        counts = meta.get("rows") or {}
        rows.append((name, classes, "yes" + (f" ({', '.join(f'{k} {v}' for k, v in counts.items())})"
                                              if counts else ""), "(not registered)"))
    head = ("dataset", "classes", f"prepared under {root}", "aliases")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    fmt = f"{{:<{widths[0]}}}  {{:>{widths[1]}}}  {{:<{widths[2]}}}  {{}}"
    print(fmt.format(*head).rstrip())
    for r in rows:
        print(fmt.format(*r).rstrip())
    if not rootp.is_dir():
        print(f"(data root '{root}' does not exist yet; `mtil prepare NAME --root {root}` creates it)")
    return 0


def _check(root: str, name: str) -> int:
    from ..data import prepared

    info = prepared.load_info(root, name)
    splits = {split: prepared.load_split(root, name, split) for split in prepared.SPLITS}
    prepared.check_consistent(root, name, info.classnames, splits)   # rows and class lists as recorded, too
    fp = prepared.verify_content(root, name)                          # the data files' bytes re-hashed
    parts = []
    for split, ds in splits.items():
        labels = ds["label"]
        parts.append(f"{split} {len(ds)} images ({len(set(labels))} classes)")
        first = ds[0]["image"]
    print(f"{info.name}: {info.num_classes} classes, {', '.join(parts)}; {len(info.templates)} templates; "
          f"first test image {first.size[0]}x{first.size[1]} {first.mode} -> ok")
    content = ", ".join(f"{s} sha256 {e['sha256'][:12]}" for s, e in fp["splits"].items())
    how = "as mtil prepare recorded" if fp["recorded"] else "no record to check against: prepared by hand or an earlier mtil"
    print(f"  content: {content} ({how})")
    return 0


def _reference(args) -> int:
    from ..data import reference

    if not args.src:
        raise MtilError("--captions needs --from DIR, the folder of the reference images")
    images = reference.image_files(args.src, per_folder=args.max_per_class)
    meta = reference.save_reference(args.root, args.name, images, reference.read_captions(args.captions),
                                    overwrite=args.overwrite, source=f"{args.src} + {args.captions}")
    print(f"prepared reference set {meta['name']}: {meta['images']} images, {meta['captions']} sentences -> "
          f"{args.root}/{meta['name']} ({meta['seconds']:.1f}s); skipped undecodable images: {meta['skipped']}")
    return 0


def execute(args) -> int:
    if args.list:
        return _list(args.root)
    if not args.name:
        raise MtilError("name the dataset to prepare, e.g. `mtil prepare DTD --root data` "
                        "(`mtil prepare --list` shows the registered ones)")
    if args.check:
        return _check(args.root, args.name)
    if args.max_per_class is not None and args.max_per_class < 1:
        raise MtilError("--max-per-class must be at least 1")
    if args.split_from and not args.src:
        raise MtilError("--split-from needs --from DIR (the folder its paths are relative to)")
    if args.captions:
        return _reference(args)

    from ..data import prepared, registry, sources

    canon = registry.resolve(args.name)
    if args.template and canon is not None:
        raise MtilError(f"{canon} is registered: its templates come from the registry; --template is for new "
                        "datasets")
    with prepared.staging(args.root, args.name, args.overwrite) as st:
        plan = sources.plan(args.name, args.root, st.work, src=args.src, source=args.source,
                            split_from=args.split_from, download_dir=args.download_dir, hf_repo=args.hf_repo,
                            hf_config=args.hf_config, cache_dir=args.cache_dir, index_base=args.index_base,
                            train_fraction=args.train_fraction, seed=args.seed, file_order=args.file_order)
        for note in plan.notes:
            log.info("%s: %s", plan.name, note)
        result = prepared.write_items(st, plan.splits, plan.classnames, args.template, args.max_per_class,
                                      source=plan.description)
        path = st.commit()
    counts = ", ".join(f"{split} {n}" for split, n in result.rows.items())
    print(f"prepared {plan.name}: {len(plan.classnames)} classes, {counts} images -> {path} "
          f"({result.seconds:.1f}s)")
    print(f"  source: {plan.description}")
    for note in plan.notes:
        print(f"  note: {note}")
    if result.capped:
        print(f"  --max-per-class {args.max_per_class}: left out "
              f"{', '.join(f'{s} {n}' for s, n in result.capped.items())} images")
    skipped = result.total_skipped
    detail = ", ".join(f"{s} {n}" for s, n in result.skipped.items() if n)
    print(f"  skipped undecodable images: {skipped}" + (f" ({detail})" if skipped else ""))
    for example in result.skipped_examples[:5]:
        print(f"    {example}")
    if skipped > 5:
        print(f"    ... (the first {len(result.skipped_examples)} are listed in {path}/{prepared.META_FILE})")
    return 0
