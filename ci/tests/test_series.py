#!/usr/bin/env python3
"""Tests of ci/series.sh (make series): the submission it writes for a test
identity must apply on the base with git am, carry that identity and no
trace of the placeholder, change nothing but the UMCG entry's M: line in the
tree, and be addressed, in git send-email's dry run, to the recipients of
get_maintainer.pl; placeholder and missing identities must be refused. A
copy of the script with a broken rewrite must fail these checks.

The submission is applied in a clone of linux/ (git clone --shared, sparse:
only the files the series touches); linux/ itself is only read. Skipped
without linux/ (make linux) or git send-email (make deps)."""

import email.utils
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
LINUX = os.path.join(TOP, "linux")
SCRIPT = os.path.join(TOP, "ci", "series.sh")
IDENT = "Test Submitter <test@example.org>"
PLACEHOLDER = "UMCG Developers <umcg-dev@localhost>"
# Any trace of the placeholder, or of the identity make linux commits with.
TRACES = ("umcg-dev@", "UMCG Developers", "umcg-build@localhost", "UMCG Build")
RFC_AUTHOR = "Peter Oskolkov <posk@google.com>"


def common(var):
    with open(os.path.join(TOP, "ci", "common.sh"), encoding="utf-8") as f:
        m = re.search(r"^%s=(\S+)$" % var, f.read(), re.M)
    return m.group(1)


BASE_TAG = common("UMCG_BASE_TAG")


def git(*args, cwd=LINUX, env=None, check=True, input=None):
    r = subprocess.run(["git", *args], cwd=cwd, env=env, input=input,
                       capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError("git %s failed: %s" % (" ".join(args), r.stderr))
    return r.stdout


def clean_env(tmp, **kw):
    """The environment of a run: no git configuration of this machine, no
    make series knobs but the given ones."""
    env = dict(os.environ)
    for k in ("SUBMITTER", "SERIES_TEST", "SERIES_OUT"):
        env.pop(k, None)
    empty = os.path.join(tmp, "empty.gitconfig")
    open(empty, "w").close()
    env.update(GIT_CONFIG_GLOBAL=empty, GIT_CONFIG_NOSYSTEM="1",
               GIT_AUTHOR_NAME="Applier", GIT_AUTHOR_EMAIL="applier@test.invalid",
               GIT_COMMITTER_NAME="Applier", GIT_COMMITTER_EMAIL="applier@test.invalid")
    env.update(kw)
    return env


def run_series(tmp, script=None, **kw):
    return subprocess.run([script or SCRIPT], env=clean_env(tmp, **kw), capture_output=True, text=True)


def fake_top(tmp, name, mutate=None):
    """A copy of ci/series.sh (mutated by the given (old, new) pairs) in a
    top directory of its own, a git repository without an identity, with a
    copy of patches/ and this project's linux/."""
    top = os.path.join(tmp, name)
    os.makedirs(os.path.join(top, "ci"))
    shutil.copy(os.path.join(TOP, "ci", "common.sh"), os.path.join(top, "ci"))
    with open(SCRIPT, encoding="utf-8") as f:
        text = f.read()
    for old, new in mutate or ():
        assert text.count(old) == 1, "ci/series.sh changed: cannot find %r to break" % old
        text = text.replace(old, new)
    script = os.path.join(top, "ci", "series.sh")
    with open(script, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(script, 0o755)
    shutil.copytree(os.path.join(TOP, "patches"), os.path.join(top, "patches"))
    os.symlink(LINUX, os.path.join(top, "linux"))
    git("init", "-q", top, cwd=tmp)
    return script


def mails(out):
    return sorted(f for f in os.listdir(out) if re.match(r"^\d{4}-.*\.patch$", f))


def headers(text):
    """The unfolded header lines of a mail or of a dry-run log entry."""
    hdrs = []
    for line in text.split("\n"):
        if line == "":
            break
        if line[:1] in (" ", "\t") and hdrs:
            hdrs[-1] += " " + line.strip()
        else:
            hdrs.append(line)
    return hdrs


def addresses(hdrs, name):
    vals = [h.split(":", 1)[1] for h in hdrs if h.lower().startswith(name.lower() + ":")]
    return {a.lower() for _, a in email.utils.getaddresses(vals) if a}


def read_recipients(out):
    to, cc, cur = set(), set(), None
    with open(os.path.join(out, "recipients.txt"), encoding="utf-8") as f:
        for line in f:
            if line.startswith("To"):
                cur = to
            elif line.startswith("Cc"):
                cur = cc
            elif line.startswith("  "):
                cur.update(a.lower() for _, a in email.utils.getaddresses([line.strip()]))
    return to, cc


# A file's diff header up to its index line, within that file's diff.
INDEX_RE = re.compile(r"^diff --git a/(\S+) b/\S+\n(?:(?!diff --git ).*\n)*?index ([0-9a-f]+)\.\.([0-9a-f]+)", re.M)


class Applied:
    """The submission in OUT applied in a sparse clone of linux/ at the base
    tag, next to patches/ applied the same way."""

    def __init__(self, tmp, out):
        self.tmp, self.out = tmp, out
        self.clone = os.path.join(tmp, "clone-" + os.path.basename(out))
        self.env = clean_env(tmp)
        orig = [os.path.join(TOP, "patches", f) for f in mails(os.path.join(TOP, "patches"))
                if not f.startswith("0000-")]
        sub = [os.path.join(out, f) for f in mails(out) if not f.startswith("0000-")]
        self.npatches = len(orig)
        paths = set()
        for p in orig + sub:
            with open(p, encoding="utf-8", errors="replace") as f:
                for m in re.finditer(r"^diff --git a/(\S+) b/(\S+)$", f.read(), re.M):
                    paths.update(m.groups())
        git("clone", "--shared", "-q", "--no-checkout", LINUX, self.clone, cwd=tmp)
        self.git("sparse-checkout", "set", "--no-cone", "--stdin",
                 input="".join("/%s\n" % p for p in sorted(paths)))
        self.orig_tree, self.orig_err = self.am(orig)
        self.sub_tree, self.sub_err = self.am(sub)
        self.sub_head = self.git("rev-parse", "HEAD").strip() if self.sub_err is None else None

    def git(self, *args, **kw):
        kw.setdefault("env", self.env)
        return git(*args, cwd=self.clone, **kw)

    def am(self, patches):
        """Applies PATCHES on the base: (tree, None), or (None, why not)."""
        self.git("checkout", "-q", "--detach", BASE_TAG)
        r = subprocess.run(["git", "am", "-q", *patches], cwd=self.clone, env=self.env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            self.git("am", "--abort", check=False)
            return None, r.stdout + r.stderr
        n = int(self.git("rev-list", "--count", "%s..HEAD" % BASE_TAG))
        if n != len(patches):
            return None, "%d commits for %d patches" % (n, len(patches))
        return self.git("rev-parse", "HEAD^{tree}").strip(), None

    def expected_tree(self, ref_tree):
        """REF_TREE with the placeholder in MAINTAINERS replaced by IDENT,
        built with plumbing in a temporary index."""
        mode, kind, blob = self.git("ls-tree", ref_tree, "MAINTAINERS").split("\t")[0].split()
        text = self.git("cat-file", "blob", blob)
        assert text.count(PLACEHOLDER) == 1, "MAINTAINERS of linux/ has %d placeholder lines" % text.count(PLACEHOLDER)
        new = self.git("hash-object", "-w", "--stdin", input=text.replace(PLACEHOLDER, IDENT)).strip()
        env = dict(self.env, GIT_INDEX_FILE=os.path.join(self.tmp, "expected.index"))
        self.git("read-tree", ref_tree, env=env)
        self.git("update-index", "--cacheinfo", "%s,%s,MAINTAINERS" % (mode, new), env=env)
        return self.git("write-tree", env=env).strip()

    def differing(self, a, b):
        return self.git("diff-tree", "-r", "--name-only", a, b).split()

    def tree_problems(self):
        """Compares the applied submission with linux/'s HEAD (or, when linux/
        holds work patches/ does not, with patches/ applied) with MAINTAINERS'
        identity line substituted: (problems, notes)."""
        problems, notes = [], []
        if self.sub_err is not None or self.orig_err is not None:
            return ["not applied"], notes
        head_tree = git("rev-parse", "HEAD^{tree}").strip()
        if head_tree == self.orig_tree:
            ref, what = head_tree, "linux/'s HEAD"
        else:
            ref, what = self.orig_tree, "patches/ applied on the base"
            notes.append("linux/'s HEAD is not patches/ (work not exported): compared with %s" % what)
        expected = self.expected_tree(ref)
        if self.sub_tree != expected:
            diff = self.differing(expected, self.sub_tree)
            msg = "the submission's tree %s is not %s with the identity substituted in MAINTAINERS (%s); differing: %s" % (
                self.sub_tree, what, expected, ", ".join(diff))
            if diff == ["MAINTAINERS"]:
                msg += " -- MAINTAINERS is the only file that differs: its identity line is rewritten wrongly"
            problems.append(msg)
        changed = self.differing(ref, self.sub_tree)
        if changed != ["MAINTAINERS"]:
            problems.append("the submission changes %s against %s, not MAINTAINERS alone" % (changed, what))
        elif not problems:
            notes.append("MAINTAINERS is the only file that differs from %s, as expected" % what)
        return problems, notes

    def identity_problems(self):
        problems = []
        if self.sub_head is None:
            return ["not applied"]
        log = self.git("log", "--reverse", "--format=%H%x00%an <%ae>%x00%B%x01", "%s..HEAD" % BASE_TAG)
        credited = 0
        for entry in filter(str.strip, log.split("\x01")):
            c, author, body = entry.strip("\n").split("\x00")
            subject = body.split("\n", 1)[0]
            if author != IDENT:
                problems.append("%s: author %s" % (subject, author))
            tags = re.findall(r"^([A-Za-z-]+-by): (.*)$", body, re.M)
            sobs = [v for k, v in tags if k.lower() == "signed-off-by"]
            if not sobs or any(v != IDENT for v in sobs):
                problems.append("%s: Signed-off-by %s" % (subject, sobs))
            orig = [i for i, (k, v) in enumerate(tags) if k == "Originally-by"]
            if orig:
                credited += 1
                if tags[orig[0]][1] != RFC_AUTHOR:
                    problems.append("%s: Originally-by %s" % (subject, tags[orig[0]][1]))
                if orig[0] + 1 >= len(tags) or tags[orig[0] + 1] != ("Signed-off-by", IDENT):
                    problems.append("%s: Originally-by is not right before the Signed-off-by" % subject)
                if subject.startswith("rust:"):
                    problems.append("%s: a rust/ patch credited to the RFC" % subject)
            if any(t in body for t in TRACES):
                problems.append("%s: the placeholder is in the commit message" % subject)
        if credited == 0:
            problems.append("no patch has Originally-by: %s" % RFC_AUTHOR)
        return problems

    def index_problems(self):
        """The index lines of the mails must name the blobs the applied
        commits really have (git am -3 and b4 rely on them)."""
        problems = []
        if self.sub_head is None:
            return ["not applied"]
        commits = self.git("rev-list", "--reverse", "%s..HEAD" % BASE_TAG).split()
        for c, f in zip(commits, [m for m in mails(self.out) if not m.startswith("0000-")]):
            with open(os.path.join(self.out, f), encoding="utf-8") as fh:
                mail = INDEX_RE.findall(fh.read())
            real = INDEX_RE.findall(self.git("diff-tree", "-p", "--full-index", c + "^", c))
            real = {p: (a, b) for p, a, b in real}
            for p, a, b in mail:
                if p not in real or not real[p][0].startswith(a) or not real[p][1].startswith(b):
                    problems.append("%s: index %s..%s of %s, the blobs are %s" % (f, a, b, p, real.get(p)))
        return problems


def trace_problems(out):
    problems = []
    for f in sorted(os.listdir(out)):
        with open(os.path.join(out, f), encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh, 1):
                if any(t in line for t in TRACES):
                    problems.append("%s:%d: %s" % (f, n, line.rstrip()))
    return problems


def from_problems(out):
    """Every mail, the cover letter included, is from IDENT."""
    problems = []
    for f in mails(out):
        with open(os.path.join(out, f), encoding="utf-8") as fh:
            hdrs = headers(fh.read())
        if "From: " + IDENT not in hdrs:
            problems.append("%s: %s" % (f, [h for h in hdrs if h.startswith("From:")]))
    return problems


def dry_run_problems(out, npatches):
    """One mail per patch plus the cover letter, from IDENT, to the
    recipients, in order, none handed to a real mail server."""
    problems = []
    to, cc = read_recipients(out)
    if not to or "linux-kernel@vger.kernel.org" not in to | cc:
        problems.append("recipients.txt: To %s, Cc %s" % (sorted(to), sorted(cc)))
    if "test@example.org" in to | cc:
        problems.append("the submitter is among the recipients")
    with open(os.path.join(out, "send-email-dry-run.txt"), encoding="utf-8") as f:
        log = f.read()
    entries = log.split("Dry-OK. Log says:\n")[1:]
    if len(entries) != npatches + 1:
        problems.append("the dry run wrote %d mails, not %d" % (len(entries), npatches + 1))
    if log.count("\nResult: OK") != npatches + 1:
        problems.append("the dry run has %d 'Result: OK'" % log.count("\nResult: OK"))
    for i, e in enumerate(entries):
        server, rest = e.split("\n", 1)
        hdrs = headers(rest)
        subject = next((h for h in hdrs if h.startswith("Subject:")), "")
        if not server.startswith("Sendmail: /nonexistent/"):
            problems.append("mail %d goes to %s" % (i, server))
        if "From: " + IDENT not in hdrs:
            problems.append("mail %d (%s) is not from %s" % (i, subject, IDENT))
        if "[PATCH %02d/%d]" % (i, npatches) not in subject:
            problems.append("mail %d has subject %s" % (i, subject))
        if addresses(hdrs, "To") != to or addresses(hdrs, "Cc") != cc:
            problems.append("mail %d (%s) is addressed to %s, Cc %s" % (
                i, subject, sorted(addresses(hdrs, "To")), sorted(addresses(hdrs, "Cc"))))
        if i > 0 and not any(h.startswith("In-Reply-To:") for h in hdrs):
            problems.append("mail %d is not a reply to the cover letter" % i)
    with open(os.path.join(out, "0000-cover-letter.patch"), encoding="utf-8") as f:
        hdrs = headers(f.read())
    if addresses(hdrs, "To") != to or addresses(hdrs, "Cc") != cc:
        problems.append("the cover letter's To:/Cc: are not the recipients")
    return problems


def skip_reason():
    if not os.path.isdir(os.path.join(LINUX, ".git")):
        return "linux/ is missing (make linux)"
    if git("rev-parse", "-q", "--verify", "refs/tags/" + BASE_TAG, check=False).strip() == "":
        return "linux/ has no %s tag" % BASE_TAG
    if not os.access(os.path.join(git("--exec-path", cwd=TOP).strip(), "git-send-email"), os.X_OK):
        return "git send-email is missing (make deps)"
    return None


@unittest.skipIf(skip_reason(), skip_reason())
class Series(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmpdir = tempfile.TemporaryDirectory(prefix="test-series.")
        cls.tmp = cls.tmpdir.name
        cls.out = os.path.join(cls.tmp, "series-out")
        cls.run_ = run_series(cls.tmp, SUBMITTER=IDENT, SERIES_TEST="1", SERIES_OUT=cls.out)
        cls.applied = None
        if cls.run_.returncode == 0:
            cls.applied = Applied(cls.tmp, cls.out)

    @classmethod
    def tearDownClass(cls):
        cls.tmpdir.cleanup()

    def produced(self):
        self.assertEqual(self.run_.returncode, 0, self.run_.stderr)
        return self.applied

    def test_applies_cleanly(self):
        a = self.produced()
        self.assertIsNone(a.orig_err, "patches/ itself does not apply")
        self.assertIsNone(a.sub_err, "the submission does not apply with git am")

    def test_identity(self):
        self.assertEqual(self.produced().identity_problems(), [])

    def test_no_placeholder_in_mails(self):
        self.produced()
        self.assertEqual(trace_problems(self.out), [])
        self.assertEqual(from_problems(self.out), [])

    def test_tree_is_linux_head_with_maintainers_substituted(self):
        problems, notes = self.produced().tree_problems()
        for n in notes:
            print("test_series: " + n, file=sys.stderr)
        self.assertEqual(problems, [])

    def test_index_lines_name_the_real_blobs(self):
        self.assertEqual(self.produced().index_problems(), [])

    def test_dry_run(self):
        a = self.produced()
        self.assertEqual(dry_run_problems(self.out, a.npatches), [])
        self.assertIn("Recipients", self.run_.stdout)

    def test_refuses_placeholder(self):
        for ident in (PLACEHOLDER, "UMCG Developers <someone@kernel.org>",
                      "Someone <umcg-dev@localhost>", "Someone <someone@localhost>",
                      "Someone <someone@host.localdomain>"):
            out = os.path.join(self.tmp, "refused")
            r = run_series(self.tmp, SUBMITTER=ident, SERIES_TEST="1", SERIES_OUT=out)
            self.assertNotEqual(r.returncode, 0, ident)
            self.assertRegex(r.stderr, "placeholder|not deliverable", ident)
            self.assertFalse(os.path.exists(out), ident)

    def test_refuses_malformed_and_reserved(self):
        for ident, why in (("Someone <someone@kernel>", "no dot"),
                           ("someone@kernel.org", "is not"),
                           ("Someone <>", "is not"),
                           (" <someone@kernel.org>", "is not"),
                           ("Someone <someone@users.noreply.github.com>", "replies"),
                           ("Someone <someone@foo.example>", "reserved"),
                           (IDENT, "SERIES_TEST=1")):
            r = run_series(self.tmp, SUBMITTER=ident, SERIES_OUT=os.path.join(self.tmp, "refused"))
            self.assertNotEqual(r.returncode, 0, ident)
            self.assertIn(why, r.stderr, ident)

    def test_refuses_missing_identity(self):
        script = fake_top(self.tmp, "no-identity")
        r = run_series(self.tmp, script=script, SUBMITTER="", SERIES_TEST="1",
                       SERIES_OUT=os.path.join(self.tmp, "refused"))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("no submitter identity", r.stderr)
        # Without SUBMITTER the git identity is the one checked.
        top = os.path.dirname(os.path.dirname(script))
        git("config", "user.name", "Someone", cwd=top)
        git("config", "user.email", "someone@localhost", cwd=top)
        r = run_series(self.tmp, script=script, SERIES_TEST="1",
                       SERIES_OUT=os.path.join(self.tmp, "refused"))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("someone@localhost", r.stderr)

    def test_checks_catch_a_broken_rewrite(self):
        """The checks above must fail for a rewrite that is wrong in ways
        the script does not notice itself: the UMCG entry's M: line gets a
        trailing space, and the patches' From: another address."""
        script = fake_top(self.tmp, "broken", mutate=[
            ('print repl($0, ph, ident); next', 'print repl($0, ph, ident " "); next'),
            ('{ print "From: " from; froms++; next }',
             '{ print "From: Test Submitter <test@example.net>"; froms++; next }'),
        ])
        out = os.path.join(self.tmp, "broken-out")
        r = run_series(self.tmp, script=script, SUBMITTER=IDENT, SERIES_TEST="1", SERIES_OUT=out)
        self.assertEqual(r.returncode, 0, "the broken copy should still write a submission: " + r.stderr)
        a = Applied(self.tmp, out)
        self.assertIsNone(a.sub_err)
        problems, _ = a.tree_problems()
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("MAINTAINERS is the only file that differs", problems[0])
        self.assertTrue(any("author Test Submitter <test@example.net>" in p
                            for p in a.identity_problems()))
        self.assertEqual(len(from_problems(out)), a.npatches + 1)


if __name__ == "__main__":
    unittest.main()
