"""BERT pretraining on the shipped corpus (t5x_lite/data/bert.py: [CLS] A [SEP] B [SEP] pairs, half of
them with B from another document, plus 15% MLM at 80/10/10):

  builtin_bert   MLM + next-sentence labels; the configs/bert.py models (nsp_head for BERT, without it
                 for the MLM-only ablation, RoBERTa's "segment pair" input without the NSP loss)

On your own files the same objective is a spec option: "text:/data/*.txt?objective=bert".
"""

from __future__ import annotations

from t5x_lite.data.bert import bert_task
from t5x_lite.data.sources import BuiltinSource
from t5x_lite.data.tasks import TaskRegistry
from t5x_lite.data.vocabularies import get_vocabulary

if "builtin_bert" not in TaskRegistry:
    TaskRegistry.add(bert_task(
        "builtin_bert", BuiltinSource(), get_vocabulary("builtin"),
        description="BERT: [CLS] A [SEP] B [SEP] pairs (B the next segment or, half the time, from another "
                    "document; nsp_label) + MLM 15% (80% mask / 10% random / 10% keep); shipped "
                    "WordNet+Shakespeare corpus"))
