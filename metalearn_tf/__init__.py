"""metalearn in Keras 3 (TensorFlow backend): mirror of ``metalearn_torch``, file for file.

Importing the package registers every model class with Keras, so a ``.keras`` file loads
the Keras way: ``import metalearn_tf; keras.models.load_model("run/model.keras")``.

TensorFlow's C++ start-up notices (oneDNN, CPU instructions, "could not find cuda drivers",
``cuInit`` failures on a machine without a GPU) are kept off stderr unless the user asks for
them with ``TF_CPP_MIN_LOG_LEVEL=0`` or ``1``; they are replayed if the import fails.

:func:`set_batchnorm_statistics` / :func:`batchnorm_statistics`
(:mod:`metalearn_tf.models.backbones`) are re-exported here: the dtype the BatchNorm layers
built afterwards accumulate batch statistics in (``METALEARN_BN_STATISTICS``).
"""

from __future__ import annotations

import os
import sys

# Keras 3 picks its backend at first import; this package is the TensorFlow side.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__all__: list[str] = ["BN_STATISTICS", "set_batchnorm_statistics", "batchnorm_statistics"]


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow and initialise its devices with file descriptor 2 captured.

    Some of TensorFlow's notices are written before its logging is configured (so
    ``TF_CPP_MIN_LOG_LEVEL`` cannot silence them); capturing the descriptor is the one way.
    """
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") in ("0", "1"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tempfile

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable descriptor 2 (embedded interpreters)
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # device start-up notices come here
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


_import_tensorflow_quietly()

from metalearn_tf import models as _models  # noqa: E402  (after the quiet import)

_models.available_models()  # imports every model module, so each class is registered

from metalearn_tf.models.backbones import (  # noqa: E402
    BN_STATISTICS,
    batchnorm_statistics,
    set_batchnorm_statistics,
)
