"""Round actions: one function each, shared by the CLI subcommand, the TUI key and its palette entry.

An `Action` names its parameters once (`Param`: flag, form label, parser,
prefilled default). The CLI builds its options from them and the TUI builds
its form from them; both hand the raw text to `invoke`, which parses every
value with the same parser (so a bad value is the same one-line error in the
terminal and inside the form), fills in the same defaults, runs the action,
and writes the action's entry in the intervention log as part of doing it.
Nothing is written before every check has passed.

No Textual here: the CLI imports this without the UI.
"""

from __future__ import annotations

from fibtui.actions.annotations import commit_crop, export_labels, import_labels
from fibtui.actions.base import (
    Action,
    Context,
    Param,
    augment_spec,
    box_range,
    init_source,
    integer,
    names,
    number,
    parse,
    path,
    preprocess_method,
    text,
    triple,
    yes_no,
)
from fibtui.actions.defaults import (
    EXECUTOR,
    ROUND,
    VOLUME,
    active_jobs,
    class_names,
    default_batch,
    default_patch,
    default_preprocess,
    executors,
    first_resumable,
    first_unlabelled_region,
    last_threshold,
    latest_executor,
    resumable_jobs,
    round_numbers,
    round_target,
    unlabelled_regions,
)
from fibtui.actions.measure import measure
from fibtui.actions.rounds import (
    confirm_cancel_job,
    confirm_cancel_round,
    confirm_draw,
    confirm_label,
    add_crop,
    cancel_job,
    cancel_round,
    draw_holdout,
    evaluate,
    label_holdout,
    new_round,
    predict,
    preview_job,
    resume,
    train,
)
from sessions import train_options
from sessions.rounds import STEM_BELOW_NM
from sessions.workspace import Session

BLOCK = Param("block", "--block", "Block Z,Y,X", triple(), None,
              "block shape (default: chosen from the node's memory, halo cost ≤ 30 % where it fits; "
              "a preview or an array: 32,256,256)")
THREADS = Param("threads", "--threads", "CPU threads", integer(0), 0, "CPU threads (0: all)")

ACTIONS: dict[str, Action] = {a.name: a for a in (
    Action("new_round", "New round", "N", "Start the next labeling round (crops added from now on belong to it)",
           (Param("target", "--target", "Target class", text, round_target, "the class this round trains",
                  choices=class_names),), new_round, cli="fibtui round new"),
    Action("add_crop", "Add crop", "a", "Add a labelled crop (TIFF or zarr from napari, Paintera...) to a round",
           (Param("labels_path", "--labels", "Labels file", path, None, "label array .tif or .zarr, Z,Y,X",
                  required=True),
            Param("offset", "--offset", "Offset Z,Y,X", triple(positive=False), None,
                  "position of the crop's first voxel in the volume", required=True),
            VOLUME,
            Param("classes", "--classes", "Classes", names, None, "names of labels 1..n (first crop only)"),
            ROUND), add_crop, cli="fibtui crop add"),
    Action("draw_holdout", "Draw held-out regions", "h", "Draw evaluation regions at random, once; then frozen",
           (Param("size", "--size", "Size Z,Y,X", triple(), None, "region shape", required=True),
            Param("count", "--count", "Count", integer(1), 4, "number of regions"),
            Param("within", "--within", "Within", box_range, None, "restrict to z0:z1,y0:y1,x0:x1"),
            Param("seed", "--seed", "Seed", integer(0), None, "seed (default: random, recorded)"),
            VOLUME), draw_holdout, confirm=confirm_draw, cli="fibtui holdout draw"),
    Action("label_holdout", "Label held-out region", "H", "Attach labels to a held-out region (once; then frozen)",
           (Param("region", "--region", "Region", integer(1), first_unlabelled_region, "held-out region id",
                  choices=unlabelled_regions, required=True),
            Param("labels_path", "--labels", "Labels file", path, None, "label array of the region's shape",
                  required=True),
            Param("classes", "--classes", "Classes", names, None, "names of labels 1..n (if none yet)")),
           label_holdout, confirm=confirm_label, cli="fibtui holdout label"),
    Action("train", "Train", "t", "Train or fine-tune the round's model (from this target's last model)",
           (ROUND,
            Param("target", "--target", "Target class", text, round_target, "class to train (default: the round's)",
                  choices=class_names),
            Param("iterations", "--iterations", "Iterations", integer(1), train_options.DEFAULT_ITERATIONS,
                  "training iterations"),
            Param("patch", "--patch", "Patch Z,Y,X", triple(), default_patch, "patch shape (default from the voxel size)"),
            Param("batch", "--batch", "Batch", integer(1), default_batch,
                  "patches per step (default: the starting model's, else from the voxel size)"),
            Param("lr", "--lr", "Learning rate", number(gt=0), 1e-3, "peak learning rate (cosine decay)"),
            Param("base", "--base", "Base channels", integer(1), None,
                  "U-Net channels at the first level (default: the starting model's, else "
                  f"{train_options.DEFAULT_BASE})"),
            Param("levels", "--levels", "Levels", integer(1), None,
                  f"U-Net levels (default: the starting model's, else {train_options.DEFAULT_LEVELS})"),
            Param("stem", "--stem", "Stem Z,Y,X", triple(), None,
                  "pooling before the U-Net's levels, per axis (default: the starting model's, else on axes finer "
                  f"than {STEM_BELOW_NM:g} nm 4 in-plane on anisotropic voxels, 2 on isotropic ones)"),
            Param("kernel_grid", "--kernel-grid", "Kernel grid", train_options.check_kernel_grid, None,
                  "the voxels the U-Net's kernel plan is drawn on with a stem: input (the volume's: levels as 2D "
                  "as the plain net's) or stem (the levels' coarser grid: more 3D levels, a deeper z halo); "
                  f"default: the starting model's, else {train_options.DEFAULT_KERNEL_GRID}",
                  choices=lambda s: list(train_options.KERNEL_GRIDS)),
            Param("seed", "--seed", "Seed", integer(0), 0, "random seed"),
            THREADS,
            Param("init", "--from", "Start from", init_source, "auto",
                  "auto (this target's last model), scratch, or a round number",
                  choices=lambda s: ["auto", "scratch", *round_numbers(s)]),
            Param("preprocess", "--preprocess", "Preprocessing", preprocess_method, default_preprocess,
                  "none, percentile, clahe or denoise (default: the starting model's, else "
                  f"{train_options.DEFAULT_PREPROCESS})", choices=lambda s: list(train_options.PREPROCESS)),
            Param("augment", "--augment", "Augmentation", augment_spec, train_options.DEFAULT_AUGMENT,
                  f"preset ({', '.join(train_options.AUGMENT_PRESETS)}) and/or kind=strength,... "
                  f"(kinds: {', '.join(train_options.AUGMENT_KINDS)})"),
            Param("validation", "--validation", "Validation fraction", number(lt=1), train_options.DEFAULT_VALIDATION,
                  "fraction of each crop held apart to choose the checkpoint (0: none)"),
            Param("tta", "--tta", "Test-time flips", train_options.check_tta, train_options.DEFAULT_TTA,
                  "flips: the model is validated and applied as the mean of its in-plane mirror images "
                  "(4 passes); none: one pass", choices=lambda s: list(train_options.TTA)),
            Param("choose", "--choose", "Weights kept", train_options.check_choose, train_options.DEFAULT_CHOOSE,
                  "final: the last step's weights; best: those the validation slabs scored best (either way at "
                  "the threshold the slabs chose)", choices=lambda s: list(train_options.CHOOSE)),
            EXECUTOR), train, cli="fibtui round train"),
    Action("predict", "Predict", "p", "Predict the whole volume blockwise with the round's model",
           (ROUND, BLOCK, THREADS, EXECUTOR), predict, cli="fibtui round predict"),
    # the viewer's P over the in-process bound, and `fibtui round preview`; its key is the viewer's (the session
    # screen binds no key to it: a region is something seen in the viewer)
    Action("preview_job", "Preview region as a job", "P",
           "Predict only the blocks overlapping a region, as a small job (never the round's prediction)",
           (ROUND,
            Param("region", "--region", "Region", box_range, None,
                  "the region to predict, z0:z1,y0:y1,x0:x1 in level-0 voxels", required=True),
            Param("model", "--model", "Model", text, None,
                  "a training job id or a model.pt file (default: the round's model)"),
            VOLUME, BLOCK, THREADS,
            Param("executor", "--executor", "Executor", text, latest_executor,
                  "where the job runs (default: where the session's latest job ran, else local)",
                  choices=executors)), preview_job, cli="fibtui round preview"),
    Action("evaluate", "Evaluate", "e", "Score the round's prediction on the held-out regions",
           (ROUND,
            Param("threshold", "--threshold", "Threshold", number(gt=0, lt=1), last_threshold,
                  "probability threshold"),
            EXECUTOR), evaluate, cli="fibtui round eval"),
    Action("measure", "Measure pores", "M", "Count the pores per nucleus and their density per µm² of envelope",
           (Param("pores", "--pores", "Pore target", text, None,
                  "class whose latest prediction gives the pores (default: pore)", choices=class_names),
            Param("pores_labels", "--pores-labels", "Pore labels", path, None,
                  "labels of the whole volume instead of a prediction"),
            Param("envelope", "--envelope", "Envelope target", text, None,
                  "class whose latest prediction gives the envelope (default: envelope)", choices=class_names),
            Param("envelope_labels", "--envelope-labels", "Envelope labels", path, None,
                  "labels of the whole volume instead of a prediction"),
            Param("threshold", "--threshold", "Threshold", number(gt=0, lt=1), 0.5, "probability threshold"),
            Param("high", "--high", "Hysteresis high", number(gt=0, lt=1), None,
                  "keep only pores reaching this probability (hysteresis; default: off)"),
            Param("block", "--block", "Block Z,Y,X", triple(), None, "block shape (default 64,256,256)"),
            Param("split", "--split", "Split touching", yes_no, "no",
                  "split touching pores apart (distance-transform watershed; default: no)",
                  choices=lambda s: ["no", "yes"], switch=True),
            Param("array_tasks", "--array-tasks", "Array tasks", integer(1), None,
                  "on Slurm, label the blocks as a job array of this many tasks (default: the profile's "
                  "array_tasks)"),
            EXECUTOR), measure, cli="fibtui measure"),
    Action("resume", "Resume training", "u", "Continue a stopped training from its checkpoint, as a new attempt",
           (Param("round_n", "--round", "Round", integer(1), None, "look for the training in this round only",
                  choices=round_numbers),
            Param("job", "--job", "Training job", text, first_resumable, "the stopped training (default: the "
                  "latest resumable one)", choices=resumable_jobs),
            Param("iterations", "--iterations", "Iterations", integer(1), None, "total iterations (default: as before)"),
            Param("executor", "--executor", "Executor", text, None, "where it runs (default: where it ran)",
                  choices=executors)), resume, cli="fibtui round train --resume"),
    Action("cancel_round", "Cancel round", "X", "Cancel every running job of a round", (ROUND,), cancel_round,
           confirm=confirm_cancel_round, cli="fibtui round cancel"),
    Action("cancel_job", "Cancel job", "c", "Stop a running job (its checkpoints stay)",
           (Param("job", "--job", "Job", text, None, "job id", choices=active_jobs, required=True),),
           cancel_job, confirm=confirm_cancel_job, cli="fibtui jobs cancel"),
    Action("commit_crop", "Commit crop", "C", "Store the viewer's painted crop box as a crop of the round "
           "(unpainted voxels unlabelled), with its proofreading decisions", (ROUND,), commit_crop),
    Action("import_labels", "Import labels", "I", "Add crops from napari (TIFF, zarr, OME-Zarr labels/) or "
           "Paintera/N5; a full-volume label image becomes one crop per labelled group",
           (Param("source", "--from", "Labels", path, None, "TIFF, zarr, OME-Zarr (labels/) or N5 dataset",
                  required=True),
            Param("offset", "--offset", "Offset Z,Y,X", triple(positive=False), None,
                  "where a crop's first voxel lies (default: from the file, or cut from a full-volume image)"),
            VOLUME,
            Param("classes", "--classes", "Classes", names, None, "names of labels 1..n (first crop only)"),
            ROUND), import_labels, cli="fibtui labels import"),
    Action("export_labels", "Export labels", "E", "Write crops, held-out labels and the prediction as OME-Zarr "
           "labels/ beside the image (napari opens them over the raw volume)",
           (VOLUME,
            Param("what", "--what", "What", names, "crops,holdout,prediction", "any of crops, holdout, prediction")),
           export_labels, cli="fibtui labels export"),
)}


__all__ = ["ACTIONS", "Action", "Context", "Param", "integer", "invoke", "names", "number", "parse", "path", "text",
           "triple"]


def invoke(session: Session, name: str, raw: dict[str, str | None], ctx: Context | None = None) -> dict:
    """Parse, check and run one action; its intervention entry is written by the action itself."""
    action = ACTIONS[name]
    return action.run(session, ctx or Context(), **parse(session, action, raw))
