"""Churn: an explicit intent to leave, cancel or switch, or telling others not to subscribe.

Rule-based on purpose: a support lead must be able to read why a post was called a churn
threat, and the phrases are few and stable. Patterns run on folded text (lower case, no
accents, straight apostrophes); a negation just before the verb ("je ne vais pas résilier",
"not going to cancel") cancels a match unless the phrase is negative by nature ("n'allez
jamais chez", "je vais pas rester").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import re2

from monitor.analysis.text import fold

_OPERATORS = r"(?:free|freebox|sfr|orange|sosh|bouygues(?: telecom)?|b&you|bbox|red(?: by sfr)?|prixtel|la poste mobile|verizon|at&t|t-?mobile|sprint|vodafone|o2|ee|three|virgin(?: media)?|comcast|xfinity|spectrum|cox)"

# Phrases that say "I am leaving / I left / don't come here", each found on its own.
_RIVALS = (
    r"(?:la concurrence|(?:un|une|les|des) (?:concurrents?|autres? (?:operateur|fournisseur|fai)s?)|un autre (?:operateur|fournisseur|fai)|"
    + _OPERATORS
    + ")"
)
_FR_CHURN = [
    r"(?:je|j'|on|nous)\s+(?:vais|va|vait|veux|voulons|allons|compte|comptons|pense|songe a|suis en train de|suis sur le point de|vais bientot|vais surement|vais tres vite|vais finir par|vais devoir|dois)\s+(?:\w+\s+)?(?:resilier|partir|quitter|me barrer|me casser|me tirer|changer d'operateur|changer de (?:box|fai|forfait|operateur)|aller (?:voir )?ailleurs|aller (?:voir )?(?:chez|a) "
    + _RIVALS
    + r"|passer (?:chez|a) "
    + _RIVALS
    + r"|me desabonner|vous quitter|te quitter|porter mon numero|tout annuler|arreter mon (?:contrat|abonnement)|nous separer|(?:retourner|aller) voir (?:les anciens|ailleurs|la concurrence))",
    r"(?:je|j'|on)\s+(?:resilie|resilierai|quitte|me barre|me casse|me tire|pars chez|vais chez|m'en vais|change d'operateur|me desabonne|desabonne|vous quitte|demande la resiliation|lance la resiliation|ai demande (?:la|ma) resiliation|suis parti|suis partie)\b",
    r"\b(?:nous )?resilierons\b|\bresiliez[- ]moi\b|\bresiliez mon (?:abonnement|contrat|offre|forfait)|\blaissez[- ]moi resilier\b|\bservice (?:des )?resiliations?\b",
    r"\b(?:finir|terminer|se finir) en resiliation\b",
    r"\bcode rio\b",
    r"\b(?:demande|fais|faire|lance) (?:la|ma|une) portabilite",
    r"\bchang\w* d'operateur\b",
    r"\b(?:aller|passer|partir|passe|pars|vais|go|tester|checker|voir) (?:voir |aller )?(?:chez |a |vers )?"
    + _RIVALS,
    r"\b(?:aller|vais|va|on va|allons|tester|voir) (?:voir |tester )?ailleurs\b",
    r"\b(?:hate|envie|temps|moment) de (?:partir|passer chez|quitter|resilier|vous quitter|changer)",
    r"\bvivement\b.{0,40}\b(?:je parte|partir|resilier)",
    r"\b(?:grand )?retour chez " + _OPERATORS,
    r"\bmigration vers\b",
    r"\bpartir de chez vous\b|\bcasse de chez vous\b|\bquitter free\b|\bquitte free\b",
    r"\bdeux doigts de (?:tout )?(?:annuler|resilier|partir)",
    r"\bon se desabonne\b|\bse desabonner\b",
    r"\b(?:perdre|perdez|perd|perdu|perdrez) (?:un|une|des|vos|ses|plusieurs) (?:clients?|abonnes?|comptes?)",
    r"\bn'y allez (?:pas|jamais)\b",
    r"n'allez (?:jamais|pas|surtout pas) chez",
    r"ne (?:prenez|passez|venez|allez|signez) (?:jamais|pas|surtout pas) (?:chez|avec)",
    r"\bfuyez\b",
    r"\ba fuir\b",
    r"je (?:vous )?(?:le )?deconseille",
    r"(?:vais|va) pas rester (?:longtemps )?(?:chez|client)",
    r"\bdernier mois chez\b",
    r"\b(?:plus|a) jamais (?:chez )?" + _OPERATORS,
    r"\bplus jamais\s*[.!]*\s*$",
    r"\b(?:bye bye|adieu|ciao|au revoir)\b",
    r"\b(?:je|on) (?:retourne|repars|reviens) chez " + _OPERATORS,
    r"\b(?:bloquer|bloque|faire opposition|opposition sur) (?:le |les |mes |mon )?prelevements?\b|\bopposition et\b",
    r"\bc'est fini\b.{0,30}\b(?:free|vous|chez)\b|\b(?:free|vous|chez vous)\b.{0,30}\bc'est fini\b",
]
_EN_CHURN = [
    r"(?:i'm|im|i am|i will|i'll|ill|going to|gonna|about to|want to|wanna|plan to|planning to|ready to|need to|have to|will be|we're|we are|we will)\s+(?:\w+\s+)?(?:cancel|cancell?ing|leave|leaving|switch|switching|quit|quitting|drop|dropping|ditch|ditching|dump|dumping|port|porting|close|closing|move|moving)\s+(?:my|our|to|from|over|away|you|this|your|the)\b",
    r"\b(?:cancel+(?:ed|ing)?|terminate|terminating|terminated|closing|closed) (?:my|our) (?:contract|subscription|account|service|plan|membership|order|line|broadband|internet|phone)",
    r"\bswitch(?:ed|ing)? (?:to|over to|providers|carriers|networks)\b",
    r"\b(?:taking|take) my (?:business|money|custom) elsewhere\b",
    r"\b(?:you(?:'ve| have)?|you just) lost (?:a|another|my|one) (?:customer|client|loyal customer)",
    r"\blost (?:a|my) (?:customer|business)\b",
    r"\b(?:i'm|im|i am|we're|we are) done with (?:you|this|your)\b",
    r"\bnever (?:again|using you|buying|flying|ordering|shopping|going back)\b",
    r"\b(?:don't|do not|dont|never) (?:buy|use|fly|choose|go with|sign up|order|bank) (?:with |from )?"
    + _OPERATORS,
    r"\bstay away from\b",
    r"\bavoid (?:at all costs|them|this company)\b",
    r"\blooking for (?:a )?(?:new|another|different) (?:provider|carrier|company|bank|isp)\b",
    r"\bfind(?:ing)? (?:a )?(?:new|another|different) (?:provider|carrier|isp)\b",
    r"\blast time i (?:use|fly|buy|order|shop)\b",
    r"\bport(?:ing)? my number\b",
]
# Negations that cancel the phrase after them (checked in the few words before the match).
_NEGATION = re.compile(
    r"(?:\b(?:ne|n'|pas|jamais|not|never|won't|wont|don't|dont|didn't|didnt|no|isn't|aren't|ain't)\b|n't\b)\s*(?:\w+\s+){0,2}$"
)
_NEGATION_FR_AFTER = re.compile(r"^\s*(?:pas|jamais|plus|point)\b")
_SELF_NEGATED = re.compile(
    r"n'allez|ne (?:prenez|passez|venez|allez|signez)|pas rester|plus jamais|never|don't|do not|dont|stay away|avoid"
)


_REPEATS = re.compile(r"([a-z])\1{2,}")  # "pluuuus jamais" -> "plus jamais"


@dataclass(frozen=True, slots=True)
class ChurnSignal:
    churn: bool
    evidence: tuple[str, ...] = ()


class ChurnDetector:
    def __init__(self) -> None:
        # One alternation, scanned by RE2 (a DFA: one pass over the text whatever the number of
        # phrases, about 20x faster here than Python's backtracking `re` on the same pattern).
        # The phrases use only what both engines read alike, and folded text is ASCII letters.
        self._pattern = re2.compile("(?m)" + "|".join(f"(?:{p})" for p in (*_FR_CHURN, *_EN_CHURN)))

    def detect(self, text: str, folded: str | None = None) -> ChurnSignal:
        """Churn phrases in `text` (`folded` = `fold(text)` when the caller already has it)."""
        folded = _REPEATS.sub(r"\1", folded if folded is not None else fold(text))
        original = text if len(text) == len(folded) else folded
        evidence: list[str] = []
        for match in self._pattern.finditer(folded):
            phrase = match.group(0)
            if not _SELF_NEGATED.search(phrase):
                before = folded[max(0, match.start() - 40) : match.start()]
                after = folded[match.end() : match.end() + 12]
                if _NEGATION.search(before) or (_NEGATION_FR_AFTER.match(after) and " ne " in f" {before}"):
                    continue
            evidence.append(original[match.start() : match.end()].strip())
        return ChurnSignal(bool(evidence), tuple(dict.fromkeys(evidence)))
