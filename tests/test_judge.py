"""Verdict parsing, position swapping, win-rate statistics, and the endpoint judge against a real server."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from evalsuite.store import Store
from evalsuite.suites import judge


def test_parse_verdict_takes_the_last_label():
    assert judge.parse_verdict("[[A>B]]") == "A>B"
    assert judge.parse_verdict("labels: [[A>>B]] ... final: [[B>A]]") == "B>A"
    assert judge.parse_verdict("A is better") is None
    assert judge.parse_verdict("[[A>C]]") is None


class Fixed:
    """A judge that always answers the same thing: the position swap must cancel its bias."""

    def __init__(self, answer):
        self.answer = answer

    def judge(self, prompts):
        return [self.answer] * len(prompts)


def test_position_bias_cancels_and_unparseable_are_excluded():
    questions, answers = ["q1", "q2", "q3"], ["a1", "a2", "a3"]
    games = judge.play(Fixed("[[A>B]]"), judge.TEMPLATES["tiny"], questions, answers, answers)
    summary = judge.summarize(games, 200, seed=0)
    assert (summary["wins"], summary["ties"], summary["losses"]) == (3, 0, 3)
    assert summary["win_rate"] == 0.5
    games = judge.play(Fixed("no idea"), judge.TEMPLATES["tiny"], questions, answers, answers)
    garbled = judge.summarize(games, 200, 0)
    assert garbled["unparseable"] == 6 and garbled["win_rate"] is None


class Prefers:
    """Prefers the answer containing 'good'; knows nothing else."""

    def judge(self, prompts):
        out = []
        for p in prompts:
            a = p.split("Answer A: ")[1].split("\n")[0]
            b = p.split("Answer B: ")[1].split("\n")[0]
            a_good, b_good = "good" in a, "good" in b
            out.append("[[A>B]]" if a_good and not b_good else "[[B>A]]" if b_good and not a_good else "[[A=B]]")
        return out


def test_win_rate_and_interval():
    questions = [f"q{i}" for i in range(20)]
    base = ["good"] * 20
    variant = ["good"] * 15 + ["bad"] * 5
    summary = judge.summarize(judge.play(Prefers(), judge.TEMPLATES["tiny"], questions, base, variant), 1000, 0)
    assert (summary["wins"], summary["ties"], summary["losses"]) == (0, 30, 10)
    assert summary["win_rate"] == pytest.approx(0.375)
    assert summary["ci_low"] < 0.375 < summary["ci_high"] <= 0.5


def test_template_needs_its_fields():
    with pytest.raises(judge.JudgeError, match="{answer_b}"):
        judge.template_text("Q {question} A {answer_a}")


@pytest.fixture
def server():
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"body": body, "auth": self.headers.get("Authorization")})
            if self.headers.get("Authorization") != "Bearer sekret":
                self.send_response(401)
                self.end_headers()
                self.wfile.write(b"bad key")
                return
            prompt = body["messages"][0]["content"]
            verdict = "[[A>B]]" if "Answer A: good" in prompt else "[[B>A]]"
            payload = {"choices": [{"message": {"role": "assistant", "content": f"Thinking... {verdict}"}}]}
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", seen
    httpd.shutdown()


def test_endpoint_judge_against_a_real_server_with_caching(server, tmp_path, monkeypatch):
    url, seen = server
    monkeypatch.setenv("JUDGE_KEY", "sekret")
    store = Store(tmp_path / "s.sqlite")
    endpoint = judge.EndpointJudge(url, "judge-model", "JUDGE_KEY", store, max_tokens=64, timeout_s=10)
    base, variant = ["good", "good one"], ["good too", "bad"]
    games = judge.play(endpoint, judge.TEMPLATES["tiny"], ["q1", "q2"], base, variant)
    assert [g.verdict for g in games] == ["A>B", "A>B", "A>B", "B>A"]  # the server prefers A when A is good
    assert endpoint.calls == 4 and seen[0]["body"]["model"] == "judge-model" and seen[0]["body"]["temperature"] == 0
    again = judge.EndpointJudge(url, "judge-model", "JUDGE_KEY", store, max_tokens=64, timeout_s=10)
    judge.play(again, judge.TEMPLATES["tiny"], ["q1", "q2"], base, variant)
    assert again.calls == 0 and len(seen) == 4
    longer = judge.EndpointJudge(url, "judge-model", "JUDGE_KEY", store, max_tokens=128, timeout_s=10)
    judge.play(longer, judge.TEMPLATES["tiny"], ["q1", "q2"], base, variant)
    assert longer.calls == 4 and seen[-1]["body"]["max_tokens"] == 128  # not served the shorter verdicts


class Recording:
    """An EvalLM stand-in that records the generation settings it is asked for."""

    model_key = "recording"

    def __init__(self):
        self.kwargs = []

    def generate_until(self, requests):
        self.kwargs += [r.args[1] for r in requests]
        return ["[[A=B]]"] * len(requests)


@pytest.mark.parametrize(("one_line", "until"), [(True, ["\n"]), (False, [])], ids=["tiny", "arena"])
def test_local_judge_takes_the_budget_and_stops_as_its_template_needs(one_line, until):
    lm = Recording()
    judge.play(judge.LocalJudge(lm, 300, one_line), judge.TEMPLATES["tiny"], ["q"], ["a"], ["b"])
    assert lm.kwargs == [{"until": until, "max_gen_toks": 300, "do_sample": False}] * 2


def test_endpoint_errors_are_clear(server, tmp_path, monkeypatch):
    url, _ = server
    monkeypatch.setenv("JUDGE_KEY", "wrong")
    bad = judge.EndpointJudge(url, "m", "JUDGE_KEY", None, max_tokens=8, timeout_s=5)
    with pytest.raises(judge.JudgeError, match="HTTP 401"):
        bad.judge(["x"])
    monkeypatch.delenv("JUDGE_KEY")
    with pytest.raises(judge.JudgeError, match="JUDGE_KEY is not set"):
        judge.EndpointJudge(url, "m", "JUDGE_KEY", None, max_tokens=8, timeout_s=5)
