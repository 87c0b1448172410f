import pytest

from kangaroo.eval.extract import extract_choice, named_option, reply_kind

C = ["a dog", "a cat", "the red circle", "nothing"]

CASES = [
    ("B", 1), ("(B)", 1), ("B)", 1), ("B.", 1), ("B) a cat", 1), ("(C) the red circle", 2),
    ("The answer is (B).", 1), ("The correct answer is B", 1), ("Answer: C", 2), ("answer: (d)", 3),
    ("Option B", 1), ("The best option is C.", 2), ("选项B", 1), ("答案：C", 2), ("答案是（A）", 0),
    ("（B）", 1), ("Ｂ", 1), ("b", 1), ("(b)", 1), ("a cat", 1), ("It is a cat.", 1), ("The Red Circle!", 2),
    ("The correct answer is", None), ("There is nothing certain", 3), ("", None), ("I don't know", None),
    ("Based on the video, the answer is A) a dog", 0), ("E", None), ("The answer is a dog", 0),
    ("option d", 3), ("Option d.", 3), ("I choose option (c)", 2), ("option a is correct", 0), ("choice b", 1),
    ("the best option is c", 2), ("The answer is d.", 3), ("The best option is a cat.", 1), ("The answer is a cat", 1),
    ("option e", None), ("The options are unclear", None), ("optional: nothing", 3), ("选项c", 2),
]


@pytest.mark.parametrize("text,expected", CASES)
def test_extract(text, expected):
    assert extract_choice(text, C) == expected


REPLIES = [
    ("B", "letter_only"), ("(B)", "letter_only"), ("The answer is (B).", "letter_only"),
    ("a cat (B)", "text_agrees"), ("B) a cat", "text_agrees"), ("a cat", "text_agrees"),
    ("a dog (B)", "text_disagrees"), ("the red circle (A)", "text_disagrees"),
    ("a blue square (B)", "text_no_option"), ("I don't know", "unparsed"), ("", "unparsed"),
    ("选项B", "letter_only"), ("答案是B", "letter_only"), ("答案：B 一只狗", "text_no_option"),
]


@pytest.mark.parametrize("text,kind", REPLIES)
def test_reply_kind(text, kind):
    assert reply_kind(text, C, extract_choice(text, C)) == kind


def test_named_option_is_whole_words_and_longest():
    assert named_option("a red circle (C)", ["red circle", "a red circle flashes"]) == 0
    assert named_option("scatter (B)", C) is None  # "cat" inside a word is no option
    assert named_option("the red circle flashes (C)", ["red circle", "the red circle flashes"]) == 1
