"""Resolve the settings of one run: hyperparams.py, then config files in the order given, then
--name=value overrides, which win wherever they stand (nanoGPT's configurator, with type checks).

Values set by a config file or an override are pinned and hyperparams.py is evaluated again
around them, so the constants it derives (BATCH_SIZE, LR and END_LR follow K) follow the final
values, and a config file sees the overrides: ``WARMUP_MULTIPLIER = 2 * K`` in a preset uses the
K of ``--batch_size=1024``. Setting BATCH_SIZE without K sets K = BATCH_SIZE / BASE_BATCH_SIZE.
"""

import ast
import difflib
import inspect
import os
import re
import signal
import sys
import textwrap
import types

import hyperparams


# A sweep's own settings: what it runs and where it writes, never part of a run.
SWEEP_SETTINGS = {"SWEEP_BATCH_SIZES", "SWEEP_WITH_LARS", "SWEEP_PEAK_LRS", "SWEEP_EXTRA_SEEDS", "SWEEP_BREADTH_FIRST",
                  "SWEEP_RECIPES", "SWEEP_TARGETS", "SWEEP_REFERENCE", "RESULTS_DIR"}
# Settings that change how a run is executed or reported but not what it computes: a resumed
# run, or a sweep's recorded run, may differ in these and still be the same run.
OPERATIONAL_SETTINGS = {"RESUME", "DATA_DIR", "CHECKPOINT_DIR", "NUM_WORKERS", "NUM_THREADS", "DEVICE",
                        "COMPILE", "CUDA_GRAPHS", "DETERMINISTIC", "GHOST_BN", "LAYER_STATS_EVERY", "EVAL_EVERY"} | SWEEP_SETTINGS


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it and what is allowed."""


def run_differences(saved, settings):
    """The names whose values make ``settings`` a different run from the ``saved`` one. A name
    that ``saved`` lacks (it was written before the setting existed) counts as its default in
    hyperparams.py, which is how every setting is introduced: with a default that keeps the
    earlier behaviour."""
    defaults = constants(hyperparams)
    return [name for name, value in settings.items()
            if name not in OPERATIONAL_SETTINGS and saved.get(name, defaults.get(name)) != value]


def format_settings(settings):
    """A run's settings, one a line, without the sweep's own (SWEEP_SETTINGS, an empty RECIPE),
    which do not change what the run computes."""
    shown = {name: value for name, value in settings.items()
             if name not in SWEEP_SETTINGS and not (name == "RECIPE" and not value)}
    width = max(map(len, shown))
    return "\n".join(f"  {name:<{width}} = {value!r}" for name, value in shown.items())


def peak_lr(cfg):
    """The LR at the end of warm-up, where the schedule peaks."""
    return cfg.LR * cfg.WARMUP_MULTIPLIER


BATCH_PAIR = ("K", "BATCH_SIZE")  # one quantity written two ways: BATCH_SIZE = BASE_BATCH_SIZE * K
PATH_SETTINGS = ("DATA_DIR", "CHECKPOINT_DIR", "RESULTS_DIR", "SWEEP_REFERENCE")


def load_config(argv):
    """Settings as a SimpleNamespace of upper-case names, from ``[FILE.py ...] [--name=value ...]``."""
    defaults = constants(hyperparams)
    overrides = dict(_parse_override(arg, defaults) for arg in argv if arg.startswith("--"))
    _check_batch_pair(overrides, "the overrides")
    # Overrides win: a config file cannot change them, nor, when they set K or BATCH_SIZE, the other.
    fixed = set(overrides) | (set(BATCH_PAIR) if set(BATCH_PAIR) & set(overrides) else set())
    pins = dict(overrides)
    current = _evaluate_with_pins(pins)
    for path in (arg for arg in argv if not arg.startswith("--")):
        assigned = _run_config_file(path, current, fixed)
        _check_batch_pair({**assigned, "BASE_BATCH_SIZE": current["BASE_BATCH_SIZE"]}, path)
        if set(BATCH_PAIR) & set(assigned):  # a file that sets one of the pair replaces both
            pins = {k: v for k, v in pins.items() if k not in BATCH_PAIR}
        pins = {**pins, **assigned}
        current = _evaluate_with_pins(pins)
    for name in PATH_SETTINGS:
        if isinstance(current[name], str):
            current[name] = os.path.expanduser(current[name])
    return types.SimpleNamespace(**current)


def _check_batch_pair(settings, where):
    if all(name in settings for name in BATCH_PAIR):
        base = settings.get("BASE_BATCH_SIZE", hyperparams.BASE_BATCH_SIZE)
        if settings["BATCH_SIZE"] != base * settings["K"]:
            raise ConfigError(f"K = {settings['K']!r} and BATCH_SIZE = {settings['BATCH_SIZE']!r} in {where} "
                              f"contradict each other (BATCH_SIZE = {base} * K): set one of them")


def constants(module_or_namespace):
    """The upper-case names of a module or namespace, as a dict."""
    return {k: v for k, v in vars(module_or_namespace).items() if k.isupper()}


def _parse_override(arg, defaults):
    if "=" not in arg:
        raise ConfigError(f"override {arg!r} must be --name=value")
    key, text = arg[2:].split("=", 1)
    name = key.upper()
    if name not in defaults:
        raise ConfigError(f"unknown setting --{key}: not a constant in hyperparams.py{_did_you_mean(name, defaults)}")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text  # a bare word such as --model=resnet20 is a string
    return name, _checked(name, value, defaults[name])


# Other frameworks' names for settings (and the paper's eta), for the suggestion of a mistyped one.
OTHER_NAMES = {"LEARNING_RATE": "LR", "EPOCHS": "NUM_EPOCHS", "WD": "WEIGHT_DECAY", "ETA": "TRUST_COEF",
               "TRUST_COEFFICIENT": "TRUST_COEF", "BS": "BATCH_SIZE", "WARMUP": "WARMUP_EPOCHS"}


def _did_you_mean(name, settings):
    """'; did you mean --batch_size?' for a name close to a setting's, or to another name for
    one (OTHER_NAMES), else ''."""
    close = difflib.get_close_matches(name, list(settings), n=1, cutoff=0.75)
    close = close or [s for s in settings if s.replace("_", "") == name.replace("_", "")]
    close = close or [OTHER_NAMES[n] for n in difflib.get_close_matches(name, list(OTHER_NAMES), n=1, cutoff=0.8)]
    return f"; did you mean --{close[0].lower()}?" if close else ""


def _run_config_file(path, current, fixed):
    """Execute a config file with the current settings visible; return what it assigned, except
    the ``fixed`` names. Any error in the file is a ConfigError naming the file and line."""
    try:
        with open(path) as f:
            source = f.read()
    except OSError as e:
        raise ConfigError(f"config file {path!r} cannot be read: {e.strerror}") from None
    namespace = _Namespace(current, pinned=fixed)
    try:
        # The namespace is the globals too, so comprehensions and functions see the settings.
        exec(compile(source, path, "exec"), namespace, namespace)
    except Exception as e:  # the file's own error: a user's mistake, reported in one line
        raise ConfigError(f"{path}, line {_error_line(e, path)}: {type(e).__name__}: {_first_line(e)}") from None
    assigned = {}
    for name in namespace.assigned:
        if not name.isupper() and name.upper() in current:  # a setting's name in the wrong case would be ignored
            raise ConfigError(f"{path} assigns {name}: settings are upper-case, write {name.upper()} = ...")
        if name.isupper() and name not in fixed:
            if name not in current:
                raise ConfigError(f"unknown setting {name} in {path}: not a constant in hyperparams.py")
            assigned[name] = _checked(name, namespace[name], getattr(hyperparams, name))
    return assigned


def _error_line(error, path):
    if isinstance(error, SyntaxError) and error.filename == path:
        return error.lineno
    lines = [frame.tb_lineno for frame in _traceback_frames(error.__traceback__) if frame.tb_frame.f_code.co_filename == path]
    return lines[-1] if lines else "?"


def _traceback_frames(tb):
    while tb is not None:
        yield tb
        tb = tb.tb_next


def _first_line(error):
    text = str(error.msg if isinstance(error, SyntaxError) else error).strip()
    return text.splitlines()[0] if text else "(no message)"


class _Namespace(dict):
    """Module-level namespace for exec: records assigned names; pinned names keep their values."""

    def __init__(self, initial, pinned):
        super().__init__(initial)
        self.pinned = set(pinned)
        self.assigned = []

    def __setitem__(self, key, value):
        self.assigned.append(key)
        if key not in self.pinned:
            super().__setitem__(key, value)


def _evaluate_with_pins(pins):
    if "BATCH_SIZE" in pins and "K" not in pins:
        pins = {**pins, "K": _batch_multiple(pins["BATCH_SIZE"], pins.get("BASE_BATCH_SIZE", hyperparams.BASE_BATCH_SIZE))}
    source = inspect.getsource(hyperparams)
    namespace = _Namespace(pins, pinned=pins)
    exec(compile(source, hyperparams.__file__, "exec"), namespace, namespace)
    if "BATCH_SIZE" not in pins and namespace["BATCH_SIZE"] != namespace["BASE_BATCH_SIZE"] * namespace["K"]:
        _refuse_edited_batch_size(namespace)
    return {name: namespace[name] for name in constants(hyperparams)}  # in hyperparams.py's order


def _refuse_edited_batch_size(settings):
    """hyperparams.py's own BATCH_SIZE no longer follows K: the LR, which follows K, would not
    scale with it as it does for --batch_size. Say what to set instead."""
    batch, base = settings["BATCH_SIZE"], settings["BASE_BATCH_SIZE"]
    k = f"K = {_batch_multiple(batch, base)!r}" if isinstance(batch, int) and batch > 0 else "K"
    raise ConfigError(f"hyperparams.py sets BATCH_SIZE = {batch!r}, but BATCH_SIZE follows K there "
                      f"(BASE_BATCH_SIZE * K = {base * settings['K']!r}); set {k} instead, which sets "
                      f"BATCH_SIZE and scales the LR, or pass --batch_size={batch!r}")


def _batch_multiple(batch_size, base):
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ConfigError(f"BATCH_SIZE must be a positive integer, got {batch_size!r}")
    return batch_size // base if batch_size % base == 0 else batch_size / base


def _allowed_types(name, default):
    annotation = getattr(hyperparams, "__annotations__", {}).get(name)
    if annotation is not None:
        return getattr(annotation, "__args__", (annotation,))
    return (type(default),)


def _checked(name, value, default):
    allowed = _allowed_types(name, default)
    if float in allowed and int not in allowed and type(value) is int:
        value = float(value)
    if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
        wanted = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
        raise ConfigError(f"{name} must be {wanted}, got {value!r} ({type(value).__name__})")
    return value


def validate(cfg, world_size=1, model_names=()):
    """Raise ConfigError for the first setting that cannot run; ``model_names`` lists MODEL's choices."""
    _require(cfg, "BATCH_SIZE", _is_int(cfg.BATCH_SIZE) and cfg.BATCH_SIZE > 0, "a positive integer")
    _require(cfg, "BATCH_SIZE", cfg.BATCH_SIZE % world_size == 0,
             f"a multiple of the number of processes ({world_size})")
    per_rank = cfg.BATCH_SIZE // world_size
    micro = cfg.MICRO_BATCH_SIZE
    _require(cfg, "MICRO_BATCH_SIZE", micro is None or _is_int(micro) and micro > 0 and per_rank % micro == 0,
             f"None or a positive divisor of the per-process batch ({per_rank})")
    _require(cfg, "GHOST_BN", cfg.GHOST_BN is not True or micro is not None and micro < per_rank,
             f"True only with micro-batches: a MICRO_BATCH_SIZE below the per-process batch ({per_rank}), "
             f"whose statistics it computes in one pass")
    _require(cfg, "CUDA_GRAPHS", not cfg.CUDA_GRAPHS or world_size == 1 and cfg.DEVICE != "cpu",
             "False on the CPU and with several processes (graphs are captured on one CUDA device)")
    for name in ("LR", "BASE_LR", "WEIGHT_DECAY", "LARS_WEIGHT_DECAY", "TRUST_COEF", "END_LR"):
        _require(cfg, name, getattr(cfg, name) >= 0, ">= 0")
    _require(cfg, "MOMENTUM", 0 <= cfg.MOMENTUM < 1, "in [0, 1)")
    _require(cfg, "NUM_EPOCHS", cfg.NUM_EPOCHS > 0, "a positive integer")
    _require(cfg, "WARMUP_EPOCHS", 0 <= cfg.WARMUP_EPOCHS < cfg.NUM_EPOCHS,
             f">= 0 and fewer than NUM_EPOCHS ({cfg.NUM_EPOCHS})"
             + ("; for a run this short, add --warmup_epochs=0" if cfg.WARMUP_EPOCHS > 0 else ""))
    _require(cfg, "WARMUP_MULTIPLIER", cfg.WARMUP_MULTIPLIER >= 1, ">= 1")
    _require(cfg, "LR_SCHEDULE", cfg.LR_SCHEDULE in ("poly", "step"), '"poly" or "step"')
    _require(cfg, "STEP_EPOCHS", cfg.STEP_EPOCHS > 0, "a positive integer")
    milestones = cfg.STEP_MILESTONES
    _require(cfg, "STEP_MILESTONES", milestones is None or cfg.LR_SCHEDULE == "step", 'None unless LR_SCHEDULE = "step"')
    _require(cfg, "STEP_MILESTONES", milestones is None or milestones and milestones == sorted(set(milestones)) and all(
        isinstance(m, (int, float)) and not isinstance(m, bool) and cfg.WARMUP_EPOCHS < m < cfg.NUM_EPOCHS for m in milestones),
        f"None or increasing epochs after WARMUP_EPOCHS ({cfg.WARMUP_EPOCHS}) and before NUM_EPOCHS ({cfg.NUM_EPOCHS})")
    _require(cfg, "MODEL", cfg.MODEL in model_names, "one of " + ", ".join(model_names))
    _require(cfg, "TRAIN_SUBSET", cfg.TRAIN_SUBSET is None or cfg.TRAIN_SUBSET >= per_rank,
             f"None or at least the per-process batch ({per_rank})")
    for name in ("NUM_WORKERS", "NUM_THREADS", "PRECISE_BN", "LAYER_STATS_EVERY", "VALIDATION_SIZE"):
        _require(cfg, name, getattr(cfg, name) >= 0, ">= 0")
    _require(cfg, "EVAL_EVERY", _is_int(cfg.EVAL_EVERY) and cfg.EVAL_EVERY > 0, "a positive integer")
    _require(cfg, "DIVERGENCE_LOSS", cfg.DIVERGENCE_LOSS > 0, "> 0")
    _require(cfg, "LABEL_SMOOTHING", 0 <= cfg.LABEL_SMOOTHING < 1, "in [0, 1)")
    _require(cfg, "DEVICE", cfg.DEVICE in ("auto", "cpu") or cfg.DEVICE.startswith("cuda"),
             '"auto", "cpu", "cuda" or "cuda:N"')


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _require(cfg, name, ok, allowed):
    if not ok:
        raise ConfigError(f"{name} = {getattr(cfg, name)!r} is not allowed: must be {allowed}")


# --- help ------------------------------------------------------------------------------------
# Help is read from the files themselves and imports no torch, so that it answers at once.

HELP_FLAGS = ("-h", "--help")
HELP_WIDTH = 100
ROOT = os.path.dirname(os.path.abspath(hyperparams.__file__))


def start_command(script_doc, argv):
    """What every command does first, before it imports torch (which takes seconds): answer
    -h/--help at once, end quietly when its output is closed early (``| head``: the default
    action of SIGPIPE, as for any Unix tool), and end with one line on Ctrl-C: at once while
    torch loads, then through an exception once the command calls imports_done() (train.py and
    sweep.py take over the signals instead: utils.handle_interrupts)."""
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a background job's stays ignored
        signal.signal(signal.SIGINT, _interrupted_while_importing)
    exit_with_help_if_asked(script_doc, argv)


def imports_done():
    """From now on Ctrl-C raises SystemExit, so that ``finally`` blocks still run (a file being
    written atomically removes its temporary copy)."""
    if signal.getsignal(signal.SIGINT) is _interrupted_while_importing:
        signal.signal(signal.SIGINT, _interrupted)


def _interrupted_while_importing(signum, frame):
    # An exception raised here can land inside torch's C++ initialisers, which cannot pass it on:
    # the process aborts ("terminate called after throwing ...", SIGABRT). Nothing has been
    # written yet, so leave without unwinding.
    os.write(sys.stderr.fileno(), b"interrupted\n")
    os._exit(130)  # utils.EXIT_INTERRUPTED (utils loads torch, config must not)


def _interrupted(signum, frame):
    print("interrupted", file=sys.stderr)
    sys.exit(130)


def exit_with_help_if_asked(script_doc, argv):
    """Print the help and exit 0 if ``argv`` asks for it. The scripts call this before they
    import torch, so that help answers at once."""
    if any(arg in HELP_FLAGS for arg in argv):
        print(help_text(script_doc))
        sys.exit(0)


def help_text(script_doc):
    """The script's docstring, the presets in configs/ (each by its first sentence), and every
    setting of hyperparams.py with its default and its comment, wrapped to HELP_WIDTH."""
    lines = [script_doc.strip(), "", "Presets (config files, applied in the order given):"]
    for folder, _, files in sorted(os.walk(os.path.join(ROOT, "configs"))):
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(folder, name)
            lines += _wrapped(f"  {os.path.relpath(path, ROOT)}", _first_sentence(path), column=35)
    lines += ["", "Settings (hyperparams.py): --name=value, names case-insensitive, values Python literals:"]
    setting = re.compile(r"^([A-Z][A-Z0-9_]*)\s*(?::[^=]*)?=\s*(.*?)\s*(?:#\s*(.*))?$")
    for line in inspect.getsource(hyperparams).splitlines():
        if line.startswith("# ---"):
            lines.append(f"  {line.strip('# -')}")
        elif (match := setting.match(line)):
            name, default, comment = match.groups()
            if name == "MODEL":
                comment = f"{comment}; one of {', '.join(model_names())}"
            lines += _wrapped(f"    --{name.lower()}={default}", comment or "", column=42)
    return "\n".join(lines)


def _wrapped(head, text, column):
    """``head``, then ``text`` from ``column`` on (or one space after a longer head), wrapped to
    HELP_WIDTH with its continuation lines at ``column``."""
    head = f"{head:<{column - 1}} "
    return textwrap.wrap(text, HELP_WIDTH, initial_indent=head, subsequent_indent=" " * column) or [head.rstrip()]


def _first_sentence(path):
    """The first sentence of a preset's header comment: its comment lines up to the first that
    ends a sentence (with '.' or with ':' before a command)."""
    words = []
    with open(path) as f:
        for line in f:
            if not line.startswith("#") or line.startswith("#   "):
                break
            words.append(line.lstrip("# ").rstrip())
            sentence = " ".join(words)
            end = re.search(r"[.?](\s|$)|:$", sentence)
            if end:
                return sentence[:end.start()] + (sentence[end.start()] if sentence[end.start()] == "?" else ".")
    return " ".join(words)


def model_names():
    """The names in models.MODELS, read from models/__init__.py without importing torch."""
    tree = ast.parse(open(os.path.join(ROOT, "models", "__init__.py")).read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "MODELS" for t in node.targets):
            return [key.value for key in node.value.keys]
    return []
