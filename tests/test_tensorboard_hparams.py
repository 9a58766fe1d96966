"""The trainer writes the resolved config into the TensorBoard events, as text (TEXT tab) and as
hparams (HPARAMS tab).  Read back from the event file: with tensorboardX's protos (always
installed), and with TensorBoard's own reader where the `tensorboard` extra is installed."""

import glob
import json
import struct

import pytest

from t5x_lite.train import default_config
from t5x_lite.train import config as config_lib
from t5x_lite.train.metrics import HPARAMS_METRICS, MetricsWriter, flat_config


def _events(logdir):
    """Every Event in the TFRecord event files of logdir (length, crc, data, crc per record)."""
    from tensorboardX.proto.event_pb2 import Event
    out = []
    for path in sorted(glob.glob(f"{logdir}/events.out.tfevents.*")):
        data = open(path, "rb").read()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            out.append(Event.FromString(data[i + 12:i + 12 + n]))
            i += 12 + n + 4
    return out


@pytest.fixture(scope="module")
def resolved():
    return config_lib.resolve(default_config.get_config())[1]


def test_config_is_written_as_text_and_hparams(tmp_path, resolved):
    w = MetricsWriter(str(tmp_path))
    w.write_config(7, resolved)
    w.write(8, {"loss": 2.5})
    w.close()
    values = [(e.step, v) for e in _events(tmp_path) if e.HasField("summary") for v in e.summary.value]
    text = [(s, v) for s, v in values if v.tag == "config/text_summary"]
    assert len(text) == 1 and text[0][0] == 7
    body = text[0][1].tensor.string_val[0].decode()
    assert body.startswith("```\n") and body.endswith("\n```")
    assert json.loads(body[4:-4]) == json.loads(json.dumps(resolved))   # the whole resolved config

    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData
    plugin = {v.tag: HParamsPluginData.FromString(v.metadata.plugin_data.content)
              for _, v in values if v.metadata.plugin_data.plugin_name == "hparams"}
    start = plugin["_hparams_/session_start_info"].session_start_info.hparams
    assert start["model.d_model"].number_value == resolved["model"]["d_model"]
    assert start["data.task"].string_value == resolved["data"]["task"]
    assert json.loads(start["model.mlp_activations"].string_value) == list(resolved["model"]["mlp_activations"])
    assert set(start) == set(flat_config(resolved))
    experiment = plugin["_hparams_/experiment"].experiment
    assert [m.name.tag for m in experiment.metric_infos] == list(HPARAMS_METRICS)
    assert ("train/loss", 2.5) in [(v.tag, v.simple_value) for _, v in values if v.HasField("simple_value")]


def test_tensorboard_reads_the_config(tmp_path, resolved):
    pytest.importorskip("tensorboard")   # the `tensorboard` extra
    from tensorboard.backend.event_processing import event_accumulator
    w = MetricsWriter(str(tmp_path))
    w.write_config(0, resolved)
    w.close()
    acc = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={"tensors": 0})
    acc.Reload()
    assert "config/text_summary" in acc.Tags()["tensors"]
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert f'"d_model": {resolved["model"]["d_model"]}' in text
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(acc.PluginTagToContent("hparams"))


def test_flat_config():
    flat = flat_config({"a": {"b": 1, "c": {"d": "x"}}, "e": (1, 2), "f": None, "g": True})
    assert flat == {"a.b": 1, "a.c.d": "x", "e": "[1, 2]", "f": "null", "g": True}
