"""Metrics and postprocessors against values worked out by hand (in the comments)."""

import math

import pytest

from t5x_lite.tasks import metrics, postprocessors


def test_accuracy_invalid_label_counts_as_wrong():
    # "maybe" is not a label word -> -1 -> wrong.  2 of 4 right -> 50.
    pp = postprocessors.make_label_postprocessor(("unacceptable", "acceptable"))
    preds = [pp(p) for p in ["unacceptable", "acceptable", "maybe", "acceptable"]]
    assert preds == [0, 1, -1, 1]
    assert metrics.accuracy([0, 1, 1, 0], preds) == {"accuracy": 50.0}


def test_f1_binary_and_matthews():
    # t = 1 1 0 0 1 ; p = 1 0 1 0 1  -> TP=2 FP=1 FN=1 TN=1
    # F1 = 2TP/(2TP+FP+FN) = 4/6 ; MCC = (2*1-1*1)/sqrt(3*3*2*2) = 1/6
    t, p = [1, 1, 0, 0, 1], [1, 0, 1, 0, 1]
    assert metrics.f1_binary(t, p)["f1"] == pytest.approx(100 * 4 / 6)
    assert metrics.matthews_corrcoef(t, p)["matthews_corrcoef"] == pytest.approx(100 / 6)
    both = metrics.accuracy_and_f1(t, p)
    assert both["accuracy"] == pytest.approx(60.0) and both["f1"] == pytest.approx(400 / 6)


def test_f1_counts_invalid_as_the_wrong_class():
    # T5 f1_score_with_invalid: p = (-1, 1) for t = (0, 1) becomes (1, 1): TP=1 FP=1 FN=0 -> 2/3
    assert metrics.f1_binary([0, 1], [-1, 1])["f1"] == pytest.approx(100 * 2 / 3)
    # on a positive target the invalid output is a false negative: TP=1 FN=1 -> 2/3
    assert metrics.f1_binary([1, 1], [-1, 1])["f1"] == pytest.approx(100 * 2 / 3)


def test_matthews_with_invalid_prediction():
    # t = 1 0 1 0 ; p = 1 0 -1 0.  Classes {-1,0,1}: row sums t=(0,2,2), col sums p=(1,2,1),
    # trace c=3, s=4: (c*s - t.p)/sqrt((s^2-p.p)(s^2-t.t)) = (12-6)/sqrt(10*8) = 0.670820
    r = metrics.matthews_corrcoef([1, 0, 1, 0], [1, 0, -1, 0])["matthews_corrcoef"]
    assert r == pytest.approx(100 * 6 / math.sqrt(80))
    # All one class predicted -> undefined -> 0 (sklearn's convention as well).
    assert metrics.matthews_corrcoef([1, 0], [1, 1])["matthews_corrcoef"] == 0.0


def test_macro_f1():
    # t = 0 1 2 2 ; p = 0 2 2 1: class0 F1=1, class1 (tp0 fp1 fn1) 0, class2 (tp1 fp1 fn1) 0.5
    # mean = 0.5
    assert metrics.macro_f1([0, 1, 2, 2], [0, 2, 2, 1])["macro_f1"] == pytest.approx(50.0)
    cb = metrics.mean_multiclass_f1(3)([0, 1, 2, 2], [0, 2, 2, 1])
    assert cb == {"mean_3class_f1": pytest.approx(50.0)}


def test_pearson_and_spearman_with_ties():
    # x = 1 2 3 4, y = 2 4 5 9: dx=(-1.5,-.5,.5,1.5) dy=(-3,-1,0,4); sum dxdy = 11,
    # sum dx^2 = 5, sum dy^2 = 26 -> r = 11/sqrt(130) = 0.964764
    assert metrics.pearson_corrcoef([1, 2, 3, 4], [2, 4, 5, 9])["pearson_corrcoef"] == \
        pytest.approx(100 * 11 / math.sqrt(130))
    # ranks of x = 1 2 2 3 -> 1 2.5 2.5 4 ; y = 1 3 2 4 -> 1 3 2 4
    # d = (-1.5,0,0,1.5) and (-1.5,.5,-.5,1.5): 4.5 / sqrt(4.5*5) = 0.948683
    assert metrics.spearman_corrcoef([1, 2, 2, 3], [1, 3, 2, 4])["spearman_corrcoef"] == \
        pytest.approx(100 * 4.5 / math.sqrt(22.5))


def test_stsb_postprocess():
    assert postprocessors.string_to_float("3.8") == pytest.approx(3.8)
    assert postprocessors.string_to_float("three") == -1.0


def test_squad_normalisation_and_max_over_answers():
    # lower -> "the  cat's hat!" ; punctuation -> "the  cats hat" ; articles/space -> "cats hat"
    assert metrics.normalize_squad("The  Cat's hat!") == "cats hat"
    # ex1: "dog" == normalize("a dog") -> EM 1, F1 1
    # ex2: "in Paris, France" vs "Paris": EM 0; overlap 1, P=1/3 R=1 -> F1 = 0.5
    out = metrics.squad([["The cat", "a dog"], ["Paris"]], ["dog", "in Paris, France"])
    assert out["em"] == pytest.approx(50.0)
    assert out["f1"] == pytest.approx(75.0)


def test_squad_answers_postprocessor_uses_all_answers():
    ex = {"answers": {"text": [b"Denver Broncos", b"the Broncos"], "answer_start": [1, 2]}}
    assert postprocessors.squad_answers("x", ex, is_target=True) == ["Denver Broncos", "the Broncos"]
    assert postprocessors.squad_answers(b"Broncos", ex, is_target=False) == "Broncos"


def test_rouge_f_measures():
    # the cat sat on the mat  vs  the cat lay on the mat
    # R1: the x2, cat, on, mat overlap = 5 of 6 each side -> 5/6
    # R2: bigrams {the cat, on the, the mat} overlap 3 of 5 -> 3/5
    # RL: LCS "the cat on the mat" = 5 -> 5/6
    out = metrics.rouge(["the cat sat on the mat"], ["the cat lay on the mat"])
    assert out["rouge1"] == pytest.approx(100 * 5 / 6)
    assert out["rouge2"] == pytest.approx(60.0)
    assert out["rougeL"] == pytest.approx(100 * 5 / 6)
    # mean over examples: second pair identical -> (60 + 100) / 2
    out2 = metrics.rouge(["the cat sat on the mat", "a b"], ["the cat lay on the mat", "a b"])
    assert out2["rouge2"] == pytest.approx(80.0)


def test_bleu_t5_settings():
    # hyp: the cat sat on the mat / ref: the cat sat on a mat (same length -> BP = 1)
    # p1 = 5/6 (the clipped to 1), p2 = 3/5, p3 = 2/4, p4 = 1/3
    # BLEU = (5/6 * 3/5 * 1/2 * 1/3) ** (1/4) = 0.537285
    out = metrics.bleu(["the cat sat on a mat"], ["the cat sat on the mat"])
    assert out["bleu"] == pytest.approx(100 * (5 / 6 * 3 / 5 * 1 / 2 * 1 / 3) ** 0.25, abs=1e-4)


def test_bleu_exp_smoothing_and_brevity_penalty():
    # a b c d vs a b c e: p = 3/4, 2/3, 1/2, and 0/1 -> "exp" smoothing gives 1/(2*1)
    # BLEU = (3/4 * 2/3 * 1/2 * 1/2) ** (1/4) = 0.125 ** 0.25
    assert metrics.bleu(["a b c e"], ["a b c d"])["bleu"] == pytest.approx(100 * 0.125 ** 0.25, abs=1e-4)
    # hyp a b c d vs ref a b c d e f: all p = 1, BP = exp(1 - 6/4) = exp(-0.5)
    assert metrics.bleu(["a b c d e f"], ["a b c d"])["bleu"] == pytest.approx(100 * math.exp(-0.5), abs=1e-4)


def test_bleu_uses_intl_tokenizer():
    # intl splits the German quotes „ “ off the words, so the tokens are
    # „ Hallo Welt “ sagt er / „ Hallo Welt “ sagte er -> p = 5/6, 3/5, 2/4, 1/3 as above.
    # (13a would keep "„Hallo" and "Welt“" whole and score lower.)
    out = metrics.bleu(["„Hallo Welt“ sagte er"], ["„Hallo Welt“ sagt er"])
    assert out["bleu"] == pytest.approx(100 * (5 / 6 * 3 / 5 * 1 / 2 * 1 / 3) ** 0.25, abs=1e-4)


def test_multirc_grouped_em_and_f1a():
    # question A: answers (1,0) predicted (1,0) -> all right; question B: (1,1) vs (1,0) -> not.
    # EM = 1/2 ; f1a over all answers: TP=2 FP=0 FN=1 -> 4/5
    t = [{"group": "A", "value": 1}, {"group": "A", "value": 0},
         {"group": "B", "value": 1}, {"group": "B", "value": 1}]
    p = [{"group": "A", "value": 1}, {"group": "A", "value": 0},
         {"group": "B", "value": 1}, {"group": "B", "value": 0}]
    out = metrics.multirc_f1_and_em(t, p)
    assert out["em"] == pytest.approx(50.0) and out["f1a"] == pytest.approx(80.0)


def test_glue_and_superglue_average():
    # cola 50 ; mrpc (80+70)/2 = 75 ; mnli m/mm (80+82)/2 = 81 ; wnli excluded
    # -> (50 + 75 + 81) / 3 = 68.6667
    res = {"glue_cola_v002": {"matthews_corrcoef": 50.0},
           "glue_mrpc_v002": {"f1": 80.0, "accuracy": 70.0},
           "glue_mnli_matched_v002": {"accuracy": 80.0},
           "glue_mnli_mismatched_v002": {"accuracy": 82.0},
           "glue_wnli_v002": {"accuracy": 10.0}}
    assert metrics.glue_average(res) == pytest.approx(206 / 3)
    sg = {"super_glue_cb_v102": {"mean_3class_f1": 60.0, "accuracy": 80.0},
          "super_glue_boolq_v102": {"accuracy": 90.0}}
    assert metrics.superglue_average(sg) == pytest.approx(80.0)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        metrics.accuracy([1, 2], [1])


def test_wsc_simple_postprocessor():
    ex = {"targets_pretokenized": "The city councilmen", "label": 1}
    assert postprocessors.wsc_simple("the councilmen", ex) == 1
    assert postprocessors.wsc_simple("the demonstrators", ex) == 0
    assert postprocessors.wsc_simple("anything", ex, is_target=True) == 1


def test_paper_row_from_local_stand_ins():
    # GLUE column = mean over the local classification tasks of each task's metric mean:
    # section (60+40)/2 = 50, lexname (80+70)/2 = 75 -> 62.5; the others copy one metric.
    res = {"local_debian_section": {"accuracy": 60.0, "macro_f1": 40.0},
           "local_wordnet_lexname": {"accuracy": 80.0, "macro_f1": 70.0},
           "local_summarize_debian": {"rouge1": 30.0, "rouge2": 12.0},
           "local_qa_wordnet": {"em": 55.0, "f1": 70.0},
           "local_translate_en_de": {"bleu": 20.0}}
    assert metrics.paper_row(res) == {"GLUE": 62.5, "CNNDM": 12.0, "SQuAD": 55.0, "EnDe": 20.0}
    # T5's own tasks take precedence over the stand-ins
    res["squad_v010_allanswers"] = {"em": 80.0, "f1": 88.0}
    assert metrics.paper_row(res)["SQuAD"] == 80.0
