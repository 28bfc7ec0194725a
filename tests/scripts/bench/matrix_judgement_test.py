"""How the benchmark matrix judges an optional feature's cost (the F rows of
docs/benchmarks.md, "How F is judged"): the median's distribution-free
interval, the verdict drawn from it, and F-only runs pooled into one sample.
A verdict here decides whether a target counts as met, so it is tested like
code a user relies on.

    /usr/bin/python3 tests/scripts/bench/matrix_judgement_test.py
"""
import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "..", "scripts", "bench"))
import matrix  # noqa: E402


def run(feature, rnd, req, cpu, pair=None, errors=None, shape="F-384"):
    r = {"scenario": shape, "feature": feature, "round": rnd,
         "req_per_s": req, "cpu_ms_per_1k": cpu, "errors": errors or {}}
    if pair:
        r["pair"] = pair
    return r


def rounds(costs, start=0):
    """One round per (req ratio, cpu ratio) of `costs`: the cache's run and
    its all-off pair (1000 req/s, 10 ms per 1k requests), pacing and
    adaptive concurrency equal to theirs."""
    out = []
    for i, (rq, cp) in enumerate(costs):
        k = start + i
        for feat in ("cache", "pacing", "adaptive"):
            out.append(run("off", k, 1000.0, 10.0, pair=feat))
        out.append(run("cache", k, 1000.0 * (1 + rq), 10.0 * (1 + cp)))
        out.append(run("pacing", k, 1000.0, 10.0))
        out.append(run("adaptive", k, 1000.0, 10.0))
    return out


def cache_row(results):
    rows = [r for r in matrix.feature_rows(results)
            if r[1].startswith("cache") and "384 dims" in r[1]]
    assert len(rows) == 1, rows
    return rows[0]


class MedianInterval(unittest.TestCase):
    def test_nine_rounds_give_the_second_and_eighth_smallest(self):
        xs = [0.09, -0.01, 0.05, 0.02, -0.03, 0.07, 0.01, 0.04, 0.03]
        low, high, coverage = matrix.median_ci(xs)
        self.assertEqual((low, high), (-0.01, 0.07))
        self.assertAlmostEqual(coverage, 1 - 2 * 10 / 512)

    def test_twenty_one_rounds_give_the_sixth_and_sixteenth(self):
        xs = [i / 100 for i in range(21)]
        low, high, coverage = matrix.median_ci(list(reversed(xs)))
        self.assertEqual((low, high), (0.05, 0.15))
        self.assertGreaterEqual(coverage, 0.95)

    def test_too_few_rounds_have_no_interval(self):
        self.assertIsNone(matrix.median_ci([0.01, 0.02, 0.03, 0.04, 0.05]))


class Verdict(unittest.TestCase):
    def test_whole_interval_within_five_percent_passes(self):
        self.assertIs(matrix.feature_verdict((-0.05, 0.01, 0.96),
                                             (-0.02, 0.05, 0.96), True), True)

    def test_interval_wholly_beyond_five_percent_fails(self):
        self.assertIs(matrix.feature_verdict((-0.02, 0.01, 0.96),
                                             (0.051, 0.12, 0.96), True), False)
        self.assertIs(matrix.feature_verdict((-0.09, -0.051, 0.96),
                                             (0.0, 0.01, 0.96), True), False)

    def test_interval_across_five_percent_is_inconclusive(self):
        self.assertEqual(matrix.feature_verdict((-0.02, 0.01, 0.96),
                                                (0.03, 0.07, 0.96), True),
                         matrix.INCONCLUSIVE)

    def test_errors_fail_whatever_the_interval(self):
        self.assertIs(matrix.feature_verdict((0.0, 0.0, 0.96),
                                             (0.0, 0.0, 0.96), False), False)

    def test_a_feature_run_with_errors_fails_its_row(self):
        results = rounds([(0.0, 0.0)] * 9)
        results[3]["errors"] = {"timeout": 2}  # the cache's run of round 0
        self.assertEqual(results[3]["feature"], "cache")
        self.assertIs(cache_row(results)[5], False)


class Pooling(unittest.TestCase):
    def write(self, runs):
        f = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False)
        self.addCleanup(os.unlink, f.name)
        for r in runs:
            f.write(json.dumps(r) + "\n")
        f.close()
        return f.name

    def test_rounds_are_renumbered_and_stay_paired(self):
        # Both files number their rounds from 0; pooled, the second file's
        # rounds follow the first's, and each cache run is still divided by
        # the all-off run of its own file's round (+2 % and +4 % in the
        # first, +6 % and +8 % in the second).
        a = self.write(rounds([(-0.02, 0.02), (-0.04, 0.04)]))
        b = self.write(rounds([(-0.06, 0.06), (-0.08, 0.08)]))
        pooled = matrix.pooled_feature_results([a, b])
        self.assertEqual(sorted(set(r["round"] for r in pooled)), [0, 1, 2, 3])
        cost = next(c for c in matrix.feature_costs(pooled)
                    if c["shape"] == "F-384" and c["feature"] == "cache")
        self.assertEqual([round(x, 6) for x in sorted(cost["cpu"])],
                         [0.02, 0.04, 0.06, 0.08])

    def test_pooled_rounds_can_settle_what_one_run_cannot(self):
        # Five rounds each: no 95 % interval from one file; ten pooled give
        # one, within 5 %.
        costs = [(-0.01, 0.01), (0.0, 0.02), (-0.02, 0.0), (0.01, 0.03),
                 (-0.01, 0.01)]
        a, b = self.write(rounds(costs)), self.write(rounds(costs))
        one = cache_row(matrix.pooled_feature_results([a]))
        both = cache_row(matrix.pooled_feature_results([a, b]))
        self.assertEqual(one[5], matrix.INCONCLUSIVE)
        self.assertIs(both[5], True)

    def test_pooling_a_costly_feature_fails_it(self):
        costs = [(-0.07, 0.08), (-0.06, 0.07), (-0.08, 0.09), (-0.06, 0.06),
                 (-0.07, 0.08)]
        a, b = self.write(rounds(costs)), self.write(rounds(costs))
        self.assertIs(cache_row(matrix.pooled_feature_results([a, b]))[5],
                      False)


if __name__ == "__main__":
    unittest.main()
