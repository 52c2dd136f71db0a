"""Where the user's turn lies in the input, and when it is over.

The listener's voice events say where speech starts and stops; a turn is more than one
run of speech (people pause mid-sentence), so a stop only opens a wait: the turn ends when
the silence has lasted the endpoint, and speech within it carries the same turn on. What
the model hears starts a pre-roll before the first start, because a VAD confirms speech a
little after it began.

With semantic turn detection the silence only opens the question, and it opens as soon as
the VAD hears silence, before it is long enough for the VAD to call a stop (320 ms): once
it has lasted ``first_ask``, the end-of-turn detector is asked (again every ``every``
while the silence lasts, up to ``last_ask``) whether the words so far are a finished turn;
a yes at ``threshold`` ends the turn then; a leaning yes (its last answer at least
``unsure_threshold``) ends it after ``unsure_wait``; and ``longest`` of silence ends it
whatever it said.

Short words over a reply that took the turn ("stop", "wait what", judged by the cut-in
detector, ``barge_in.py``) are a whole turn: it ends at their stop, which the session
calls 200 ms into their silence, with neither policy's wait.

All positions are input samples; nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SemanticPolicy:
    """When the end-of-turn detector is asked, how sure it must be, and the longest wait
    (samples of silence)."""

    first_ask: int
    every: int
    last_ask: int
    threshold: float
    unsure_wait: int
    unsure_threshold: float
    longest: int
    # Once the VAD has called its stop, this P ends the turn (None: ``threshold``), and the
    # detector is asked at once.
    stop_threshold: float | None = None
    # Past the endpoint only on a sure no, and never for a turn that began over a reply or
    # one the detector was never asked about ("auto").
    guarded: bool = False


# eagerness -> (first ask ms, P(finished) that ends the turn, then after how many ms a
# smaller P does, and which, the longest wait ms). The detector learnt silences of 150-400
# ms; it is asked from the first ask up to 400 ms. The detector knows the domain's
# questions; on other speech it can be sure and wrong ("i would like to book a table for
# ..." reaches 0.99 finished, so medium answers into its 300 ms pause), or unsure of a
# finished command ("stop please", 0.1, then answered late: docs/turn-taking.md has how
# often).
EAGERNESS = {
    "high": (150, 0.35, 500, 0.1, 1200),
    "medium": (200, 0.5, 700, 0.15, 2000),
    "low": (300, 0.7, 1000, 0.3, 3000),
}

# "auto": asked from AUTO_FIRST_ASK_MS into the silence, a sure yes (AUTO_THRESHOLD) ends
# the turn there where the words are of the domain (the reply started ahead answers);
# once the VAD calls its stop (320 ms) a yes more likely than not (AUTO_STOP_THRESHOLD)
# does; a sure no (below AUTO_UNFINISHED) waits up to AUTO_LONGEST_MS for the rest,
# anything between waits the endpoint as server_vad does.
# Finished questions of the domain are sure within 100-200 ms of silence ("what is nine
# times six": 0.95-0.99), or lean to finished by the stop ("what is the month after may":
# 0.54); every mid-question pause of the Full-Duplex-Bench scenarios (configs/scenarios/fdb)
# asks 0.13 or less throughout its first 500 ms.
AUTO_FIRST_ASK_MS = 200
AUTO_THRESHOLD = 0.9
AUTO_STOP_THRESHOLD = 0.5
AUTO_UNFINISHED = 0.15
AUTO_LONGEST_MS = 2000


def semantic_policy(eagerness: str, sample_rate: int, endpoint_ms: int) -> SemanticPolicy:
    ms = sample_rate // 1000
    if eagerness == "auto":
        return SemanticPolicy(
            AUTO_FIRST_ASK_MS * ms,
            50 * ms,
            400 * ms,
            AUTO_THRESHOLD,
            endpoint_ms * ms,
            AUTO_UNFINISHED,
            max(endpoint_ms, AUTO_LONGEST_MS) * ms,
            stop_threshold=AUTO_STOP_THRESHOLD,
            guarded=True,
        )
    first, threshold, unsure, unsure_p, longest = EAGERNESS[eagerness]
    return SemanticPolicy(
        first * ms, 50 * ms, 400 * ms, threshold, unsure * ms, unsure_p, longest * ms
    )


@dataclass(frozen=True)
class TurnSpan:
    """One finished user turn: input samples ``[start, end)``, pre-roll included."""

    start: int
    end: int


class Endpointer:
    """The open user turn: its first sample, how far the model has been fed, and the
    silence that may be ending it."""

    def __init__(self, endpoint: int, preroll: int) -> None:
        self.endpoint = endpoint  # samples of silence that end a turn
        self.preroll = preroll  # samples kept before the first confirmed start
        self.start: int | None = None
        self.fed = 0  # input sample up to which the turn went to the model
        self.silence_from: int | None = None  # speech stopped here; the turn may be ending
        self.closing_from: int | None = None  # silence the VAD has not yet called a stop
        self.policy: SemanticPolicy | None = None  # None: the silence timer alone
        self._next_ask = 0
        self.last_p: float | None = None  # the detector's latest answer in this silence
        # The words ended a whole turn: short words over a reply that took it ("stop",
        # "wait what"). Neither the timer nor the end-of-turn detector, which learnt the
        # domain's questions and doubts a bare command, is waited for then.
        self.said_all = False
        self.over_reply = False  # the turn began as speech over the agent's reply
        # A silence in it outlasted the endpoint and the user went on: the rest is the end
        # of what they began, and the detector, which reads the last two seconds, hears
        # mostly the pause and the rest ("... four") and doubts it (P 0.06 after "what is
        # eleven times", 1.2 s, "four"; 0.000 after "what is nine", 0.6 s, "plus three"
        # in a voice it never trained on). With "auto" the rest ends at the VAD's stop.
        self.waited_out = False

    def retune(self, endpoint: int, preroll: int) -> None:
        """New settings, from the next frame on (an open turn keeps its start)."""
        self.endpoint, self.preroll = endpoint, preroll

    @property
    def open(self) -> bool:
        return self.start is not None

    @property
    def in_speech(self) -> bool:
        """A turn is open and not in a silence that may end it."""
        return self.start is not None and self.silence_from is None

    def speech_started(self, sample: int, oldest: int, over_reply: bool = False) -> bool:
        """Speech confirmed from ``sample``; ``oldest`` is the first input sample still held;
        ``over_reply``: the agent was replying. True when this opens a new turn (the model's
        front end starts afresh)."""
        quiet = self.silent_since
        if quiet is not None and sample - quiet >= self.endpoint:
            self.waited_out = True
        self.silence_from = self.closing_from = self.last_p = None
        self.said_all = False  # the user goes on: the turn is what follows too
        if self.start is not None:
            return False
        self.start = self.fed = max(0, sample - self.preroll, oldest)
        self.over_reply, self.waited_out = over_reply, False
        return True

    def speech_stopped(self, sample: int, said_all: bool = False) -> None:
        """Silence from ``sample``: the turn ends if it lasts the endpoint, or at once when
        ``said_all`` (the words were a whole turn)."""
        if self.start is not None:
            self.said_all = said_all
            if sample != self.closing_from:  # else the asking began with the closing silence
                self._next_ask = sample + (self.policy.first_ask if self.policy else 0)
                self.last_p = None
            elif self.policy is not None and self.policy.stop_threshold is not None:
                self._next_ask = 0  # the stop has its own threshold: ask now
            self.silence_from, self.closing_from = sample, None

    def closing(self, sample: int | None) -> None:
        """Each frame of an open turn: where the silence the VAD hears but has not called
        a stop yet began (None: none, the user speaks). Semantic detection asks from it."""
        if self.start is None or self.silence_from is not None or sample == self.closing_from:
            return
        self.closing_from, self.last_p = sample, None
        if sample is not None and self.policy is not None:
            self._next_ask = sample + self.policy.first_ask

    @property
    def silent_since(self) -> int | None:
        """Where the silence inside the open turn began, called a stop or not; None while
        the user speaks (or no turn is open)."""
        if self.start is None:
            return None
        return self.silence_from if self.silence_from is not None else self.closing_from

    @property
    def quiet_from(self) -> int | None:
        """Where the silence that may end the turn began, called a stop or not yet."""
        return self.silence_from if self.silence_from is not None else self.closing_from

    def to_feed(self, now: int) -> tuple[int, int] | None:
        """The samples ``[begin, now)`` the model has not been given yet while the user
        speaks, marked as given; None when nothing is due."""
        if not self.in_speech or now <= self.fed:
            return None
        begin, self.fed = self.fed, now
        return begin, now

    def ask_due(self, now: int) -> bool:
        """Semantic detection wants the detector's answer at input sample ``now`` (and
        then not again before ``every`` has passed)."""
        p, quiet = self.policy, self.quiet_from
        if p is None or quiet is None or now < self._next_ask:
            return False
        if now - quiet > p.last_ask:
            return False
        self._next_ask = now + p.every
        return True

    def ended(self, now: int, finished: float | None = None, within_domain: bool = True) -> bool:
        """Whether the turn is over at input sample ``now``: its words were a whole turn
        and the VAD has called their stop; the endpoint's silence has passed; or, with
        semantic detection, the detector says ``finished`` (a probability) surely enough,
        or the longest wait has passed. ``within_domain``: the words are of the model's
        domain as far as is known; "auto" trusts a yes before the VAD's stop only then."""
        p, quiet = self.policy, self.quiet_from
        if self.said_all and self.silence_from is not None:
            return True
        if quiet is None:
            return False
        if p is None:
            return self.silence_from is not None and now - quiet >= self.endpoint
        if finished is not None:
            self.last_p = finished
        if p.guarded and self.waited_out and self.silence_from is not None:
            return True
        if p.guarded and (self.last_p is None or self.over_reply):
            # "auto" goes past the endpoint only on the detector's word, and never after
            # the user cut into a reply: that is a command or a new question, which the
            # detector doubts more often ("hold on, stop" waited 2 s) and a late answer
            # hurts.
            leaning = True
        else:
            leaning = self.last_p is not None and self.last_p >= p.unsure_threshold
        sure = p.threshold
        if p.stop_threshold is not None and (self.silence_from is not None or self.over_reply):
            # Over a reply the user has already taken the turn: no need to be surer
            # before the stop than at it.
            sure = p.stop_threshold
        # Beyond the domain the detector can be sure and wrong in a pause.
        doubted = p.guarded and self.silence_from is None and not within_domain
        return (
            now - quiet >= p.longest
            or (finished is not None and finished >= sure and not doubted)
            or (leaning and now - quiet >= p.unsure_wait)
        )

    def close(self) -> TurnSpan:
        """The turn is over: its span; the endpointer waits for the next."""
        if self.start is None or self.silence_from is None:
            raise RuntimeError("no user turn has ended")
        span = TurnSpan(self.start, self.silence_from)
        self.drop()
        return span

    def drop(self) -> None:
        """Forget the open turn (a short sound that was no turn at all)."""
        self.start = self.silence_from = self.closing_from = self.last_p = None
        self.said_all = self.over_reply = self.waited_out = False
