"""NegEx trigger lists of the language layer (``language``), as plain words.

Pre triggers negate what follows them, post triggers what comes before;
pseudo triggers look like negations and are none; hedges mark doubt; ends
close a scope. Kept apart from the algorithm so that they read as a list.
"""

from __future__ import annotations

AUX = frozenset(
    "do does did should must can could will would is are was were need may might shall".split()
)
# Two- and three-word triggers first: they are matched before single words.
PRE_PHRASES = (
    "no need for", "no need to", "no access to", "instead of", "rather than", "other than",
    "anything but", "anything except", "cut off from", "keep it off", "keep off", "keep away",
    "free of", "isolated from", "away from", "leave out", "get rid of", "turn off",
    "switch off", "shut off", "do without", "not any", "no more",
)  # fmt: skip
PRE_WORDS = frozenset(
    """
    no not without w/o never nor neither none zero nothing cannot sans minus except excluding
    disable disabled disallow block forbid deny prevent avoid skip exclude ban lacking
    dont cant wont isnt doesnt shouldnt wouldnt didnt arent mustnt havent hasnt wasnt
    hate dislike detest loathe
    """.split()
)
POST_PHRASES = ("is a no", "no thanks", "not please", "switched off", "turned off")
POST_WORDS = frozenset("unnecessary unwanted disabled disallowed forbidden blocked".split())
OFF_VERBS = frozenset("turn turned switch switched shut cut kick log take show pay keep".split())
ANSWER_NO = frozenset("no none off nope nah disabled false 0 n".split())
PSEUDO = (
    "not only", "not just", "no problem", "no worries", "not sure", "no matter", "no doubt",
    "don't forget", "do not forget", "dont forget", "don't mind", "do not mind", "don't care",
    "not bad", "no more than", "not more than", "no less than", "not less than",
    "no later than", "not too", "can't wait", "cannot wait", "no idea", "never mind",
    "nothing fancy", "no frills", "not a problem", "without losing", "don't lose",
    "do not lose", "dont lose", "never lose", "not lose", "not to lose", "no data loss",
    "if not", "or not", "nothing else", "not necessarily", "never ever lose",
    "don't want to lose", "do not want to lose", "dont want to lose", "without any problem",
)  # fmt: skip
HEDGES = (
    "maybe", "perhaps", "possibly", "not sure", "might", "may need", "unsure", "if needed",
    "if necessary", "optional", "optionally", "i guess", "or not", "not certain",
)  # fmt: skip
ENDS = frozenset(
    """
    but however though although yet whereas while so because since then also plus with w/
    please instead rather only just except apart besides unless where which who when if
    until after before for as
    """.split()
)
# "the clipboard shouldn't work": a negated auxiliary before one of these negates
# its subject, the words before it.
STATE_VERBS = frozenset(
    "work works working be exist function run happen matter go get have reach connect".split()
)
NOT_ADJECTIVES = frozenset(
    """
    needed necessary required wanted allowed ok okay welcome desired important essential
    permitted acceptable an option possible
    """.split()
)
SUBJECTS = frozenset("i we you it they he she there that this let give make install".split())
# Words that only negate: never part of what a request wants to do.
NEGATION_WORDS = frozenset(
    {*PRE_WORDS, *POST_WORDS, *NOT_ADJECTIVES, *ANSWER_NO, "off", "needed", "need"}
)
# Words of the request's policy: a negation over one of them carries on through
# a list of them ("no internet, clipboard or usb").
POLICY_WORDS = frozenset(
    """
    internet network networking net web wifi wi-fi connection connections connectivity
    online outbound traffic clipboard copy paste copy-paste pasting sound audio usb
    printing printer persistence saving storage sharing transfer downloads uploads camera
    webcam microphone mic tor vpn access gui desktop lan ethernet
    """.split()
)
