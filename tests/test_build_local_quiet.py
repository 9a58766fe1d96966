"""`t5x-lite data build-local` writes its TFDS datasets from rows in memory: TFDS's
"Downloading and preparing dataset" line (nothing is downloaded) must not appear."""

import os

from t5x_lite.builders.local import write_tfds


def test_write_tfds_prints_no_download_message(tmp_path, capfd):
    import tensorflow_datasets as tfds
    features = tfds.features.FeaturesDict({"text": tfds.features.Text()})
    path = write_tfds("quiet_rows", str(tmp_path), features, {"train": [{"text": "a"}, {"text": "b"}]}, "two rows")
    out, err = capfd.readouterr()
    assert os.path.isfile(os.path.join(path, "dataset_info.json"))
    assert "Downloading and preparing" not in out + err
    assert "downloaded and prepared" not in out + err
    rows = tfds.data_source("quiet_rows", data_dir=str(tmp_path))["train"]
    assert sorted(r["text"] for r in rows) == [b"a", b"b"]
