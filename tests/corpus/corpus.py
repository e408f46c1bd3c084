#!/usr/bin/env python3
"""`replay` on public captures, judged against an independent reading.

    corpus.py fetch DIR          download the pinned sources into DIR, keep their captures
    corpus.py run DIR BIN [-j N] [--report FILE]
                                 replay each capture with BIN, judge it with judge.py,
                                 print the disagreements and a summary
    corpus.py live DIR BIN [-n N] [--report FILE]
                                 send the N short Ethernet captures with the most
                                 handshakes (of run's report), at their own pace (tcpreplay), through a
                                 veth pair between two namespaces of its own to the
                                 agent in tap mode (run --no-egress); compare its
                                 metrics with replay's funnel

The captures are those other projects' test suites ship: tcpdump's, Wireshark's,
nDPI's, Suricata's, tcpflow's, dpkt's, pcapy's, pypacker's, gopacket's (two forks),
pcap-parser's, fetched from Debian's archive, PyPI and crates.io at pinned versions and checked against their SHA-256. A capture
"agrees" when replay and the judge give the same funnel: attempts, SYN-ACKs,
completions, rejections, aborts and SYN retransmits (and, reported apart, the
rest of the handshake counters). Exit status 1 on any disagreement, any replay
that panicked, hung or exited without a report on a capture tshark reads.
"""
import concurrent.futures
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
import urllib.request

import judge as judge_mod

DEBIAN = "http://deb.debian.org/debian/pool/main"
SOURCES = [
    # (name, url, sha256)
    ("tcpdump", f"{DEBIAN}/t/tcpdump/tcpdump_4.99.3.orig.tar.gz",
     "ad75a6ed3dc0d9732945b2e5483cb41dc8b4b528a169315e499c6861952e73b3"),
    ("wireshark", f"{DEBIAN}/w/wireshark/wireshark_4.0.17.orig.tar.bz2",
     "62fd1491b6211d1651a16a45ead15808970b3a6a9ebde2537f96722af47aaaa5"),
    ("ndpi", f"{DEBIAN}/n/ndpi/ndpi_4.2.orig.tar.gz",
     "e54ce8fe13adc5d747be7553513657fae78f796e0bd459e122c280cc06ce4daf"),
    ("suricata", f"{DEBIAN}/s/suricata/suricata_7.0.10.orig.tar.xz",
     "8956f7de394652b7cb7ede4a1715b0c46798ac825d11f08a5785b07dae7a945a"),
    ("dpkt", f"{DEBIAN}/p/python-dpkt/python-dpkt_1.9.8.orig.tar.gz",
     "9990639e19a9c8f1db4af453b7e6a45ef2995ec03e13bac35b9824839fd46867"),
    ("tcpflow", f"{DEBIAN}/t/tcpflow/tcpflow_1.6.1.orig.tar.gz",
     "c1c88513473e12011c0c00bba88dd02013ea3b813b08088f250cbf82b8f42358"),
    ("pcapy", f"{DEBIAN}/p/pcapy/pcapy_0.11.5.orig.tar.gz",
     "2ff96eb65caee8a45a3ae3edb78d5b4d8debcace9dc2921aefa3be83bb0af9c6"),
    ("pypacker", "https://files.pythonhosted.org/packages/83/c1/"
     "b270e105135bb24986486c5b60e2d0c3cde4ed2ee11c8f4d7074d9792ffe/pypacker-5.4.tar.gz",
     "80fb794acbe9eb972e43b4b28e85d8899ea3637fa5461df2866736e6d99ea5a3"),
    ("gopacket", f"{DEBIAN}/g/gopacket/golang-github-google-gopacket-dev_1.1.19-3_all.deb",
     "a70e11de3ae9232eceb2c623cfedb903d25acb1e2f480213745ac49e5dfa36bd"),
    ("gopacket-gopacket", f"{DEBIAN}/g/golang-github-gopacket-gopacket/"
     "golang-github-gopacket-gopacket-dev_1.0.0-1_all.deb",
     "2875b75e7396011eb411cddab214a4309b84f989c61d5b41dd4a4ca0c44e2c5c"),
    ("pcap-parser", "https://static.crates.io/crates/pcap-parser/pcap-parser-0.17.0.crate",
     "1099a3a64b376c536394622c9e5ea8ecfac3e3e44f88857b1e7da114135d3df4"),
]

MAGICS = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d",
          b"\x0a\x0d\x0d\x0a")
FUNNEL = ["attempts", "synack", "completed", "rejected", "aborted", "retransmits_syn"]
OTHERS = ["retransmits_synack", "duplicate_observations", "timeouts", "unsolicited_synack",
          "late_segments", "superseded", "invalid"]
REPLAY_TIMEOUT_S = 300


def is_capture(head):
    if head[:4] in MAGICS:
        return True
    if head[:2] == b"\x1f\x8b":
        try:
            return gzip.GzipFile(fileobj=io.BytesIO(head)).read(4) in MAGICS
        except (OSError, EOFError):
            return False
    return False


def open_archive(path):
    """A tar archive; for a Debian binary package (an ar archive), its data."""
    with open(path, "rb") as f:
        head = f.read(8)
        if head != b"!<arch>\n":
            return tarfile.open(path)
        while True:
            member = f.read(60)
            if len(member) < 60:
                sys.exit(f"corpus: {path}: no data member")
            name = member[:16].decode().strip()
            size = int(member[48:58].decode().strip())
            data = f.read(size + (size & 1))[:size]
            if name.startswith("data.tar"):
                return tarfile.open(fileobj=io.BytesIO(data))


def fetch(root):
    os.makedirs(root, exist_ok=True)
    kept = 0
    for name, url, sha in SOURCES:
        archive = os.path.join(root, os.path.basename(url))
        if not os.path.exists(archive):
            print(f"corpus: fetching {url}", file=sys.stderr)
            with urllib.request.urlopen(url, timeout=300) as r:
                data = r.read()
            with open(archive + ".part", "wb") as f:
                f.write(data)
            os.replace(archive + ".part", archive)
        with open(archive, "rb") as f:
            got = hashlib.sha256(f.read()).hexdigest()
        if got != sha:
            sys.exit(f"corpus: {archive}: sha256 {got}, expected {sha}")
        out = os.path.join(root, "captures", name)
        os.makedirs(out, exist_ok=True)
        with open_archive(archive) as tar:
            for m in tar:
                if not m.isfile() or m.size < 24 or m.size > 512 << 20:
                    continue
                data = tar.extractfile(m).read()
                if not is_capture(data[:64]):
                    continue
                dest = os.path.join(out, m.name.split("/", 1)[-1].replace("/", "__"))
                with open(dest, "wb") as f:
                    f.write(data)
                kept += 1
    print(f"corpus: {kept} captures under {os.path.join(root, 'captures')}", file=sys.stderr)


def replay_counts(bin_path, path):
    """(status, counts or message). status: ok, incomplete, refused, hung, panicked."""
    try:
        p = subprocess.run([bin_path, "replay", path, "--format", "json"],
                           capture_output=True, text=True, timeout=REPLAY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return "hung", f"no answer in {REPLAY_TIMEOUT_S} s"
    if "panicked" in p.stderr or p.returncode > 1 or p.returncode < 0:
        return "panicked", p.stderr.strip()[-300:]
    if not p.stdout.strip():
        return "refused", p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "no output"
    r = json.loads(p.stdout)
    counts = {}
    for d in ("inbound", "outbound"):
        side = r[d]
        for k, v in side.items():
            if k == "latency_seconds":
                continue
            name = k
            if k.startswith("timeouts_"):
                name = "timeouts"
            elif k.startswith("superseded_"):
                name = "superseded"
            elif k.startswith("invalid_"):
                name = "invalid"
            counts[name] = counts.get(name, 0) + v
    counts["frames"] = r["frames"]
    counts["reordered_synacks"] = r["reordered_synacks"]
    counts["_other_link"] = r["other_link_type"]
    counts["_link"] = r["link_type"]
    counts["_duration"] = r["duration_seconds"]
    counts["_cut"] = r["cut_to_headers"]
    return ("ok" if r["complete"] else "incomplete"), counts


def one(args):
    bin_path, path = args
    status, got = replay_counts(bin_path, path)
    return path, status, got, judge_mod.judge(path)


def run(root, bin_path, jobs, report):
    base = os.path.join(root, "captures")
    paths, seen = [], set()
    for d, _, files in os.walk(base):
        for f in sorted(files):
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                h = hashlib.sha256(fh.read()).hexdigest()
            if h not in seen:
                seen.add(h)
                paths.append(p)
    paths.sort()
    start = time.time()
    tally = {"captures": len(paths), "agree": 0, "disagree": 0, "refused": 0, "incomplete": 0,
             "unreadable_by_tshark": 0, "panicked": 0, "hung": 0, "with_handshakes": 0,
             "attempts": 0, "completed": 0, "others_differ": 0,
             "refused_syns": 0}
    lines = []
    per_capture = {}
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for path, status, got, want in pool.map(one, [(bin_path, p) for p in paths]):
            rel = os.path.relpath(path, base)
            if status in ("panicked", "hung"):
                tally[status] += 1
                lines.append(f"{status.upper()} {rel}: {got}")
                continue
            if status == "refused":
                tally["refused"] += 1
                if want and want["syns_any_link"]:
                    tally["refused_syns"] += want["syns_any_link"]
                    lines.append(f"REFUSED {rel}: {got} (tshark: {want['syns_any_link']} SYNs)")
                continue
            if want is None:
                tally["unreadable_by_tshark"] += 1
                continue
            if status == "incomplete":
                tally["incomplete"] += 1
            diff = [k for k in FUNNEL if got.get(k, 0) != want[k]]
            other = [k for k in OTHERS if got.get(k, 0) != want[k]]
            if any(want[k] for k in FUNNEL):
                tally["with_handshakes"] += 1
            tally["attempts"] += want["attempts"]
            tally["completed"] += want["completed"]
            per_capture[rel] = got
            if diff:
                tally["disagree"] += 1
                lines.append(f"DISAGREE {rel}: " + ", ".join(
                    f"{k} replay {got.get(k, 0)} judge {want[k]}" for k in diff + other))
            else:
                tally["agree"] += 1
                if other:
                    tally["others_differ"] += 1
                    lines.append(f"OTHER {rel}: " + ", ".join(
                        f"{k} replay {got.get(k, 0)} judge {want[k]}" for k in other))
    tally["seconds"] = round(time.time() - start)
    for line in lines:
        print(line)
    print(json.dumps(tally))
    if report:
        with open(report, "w") as f:
            json.dump({"tally": tally, "lines": lines, "captures": per_capture}, f, indent=1)
    bad = tally["disagree"] + tally["panicked"] + tally["hung"]
    return 1 if bad else 0


LIVE_METRICS = [
    ("attempts", "tcp_handshake_attempts_total", None),
    ("synack", "tcp_handshake_synack_total", None),
    ("completed", "tcp_handshake_completed_total", None),
    ("rejected", "tcp_handshake_rejected_total", None),
    ("aborted", "tcp_handshake_aborted_total", None),
    ("retransmits_syn", "tcp_handshake_retransmits_total", 'segment="syn"'),
]
LIVE_MAX_SECONDS = 8.0


def sh(*args, check=True, **kw):
    return subprocess.run(list(args), check=check, capture_output=True, text=True, **kw)


def scrape(ns):
    """The agent's metrics in namespace `ns`, or None while it does not serve."""
    p = sh("ip", "netns", "exec", ns, "curl", "-sf", "--max-time", "2",
           "http://127.0.0.1:9437/metrics", check=False)
    return p.stdout if p.returncode == 0 else None


def live_counts(text):
    out = {}
    for key, metric, label in LIVE_METRICS:
        total = 0.0
        for line in text.splitlines():
            if line.startswith(metric + "{") or line.startswith(metric + " "):
                if label is None or label in line:
                    total += float(line.rsplit(" ", 1)[1])
        out[key] = int(total)
    return out


def live(root, bin_path, n, report):
    """Sends captures `run` read (its `report`) through the live agent."""
    base = os.path.join(root, "captures")
    with open(report) as f:
        captures = json.load(f)["captures"]
    # Ethernet captures short enough to send at their own pace, with
    # handshakes, each frame whole.
    picked = []
    for rel, got in captures.items():
        if (got["_link"] != "ethernet" or got["_other_link"] or got["_cut"]
                or got["_duration"] > LIVE_MAX_SECONDS or not got["attempts"]):
            continue
        want = {k: got.get(k, 0) for k, _, _ in LIVE_METRICS}
        picked.append((want["attempts"], os.path.join(base, rel), want, got["frames"]))
    picked.sort(key=lambda t: (-t[0], t[1]))
    picked = picked[:n]
    # Two namespaces of our own, joined by veth, with no address and no
    # route: whatever the captures hold goes nowhere past them.
    tag = f"hm-corpus-{os.getpid()}"
    sender, tap = f"{tag}-sender", f"{tag}-tap"
    failures = 0
    unsent = 0
    try:
        for ns in (sender, tap):
            sh("ip", "netns", "add", ns)
            for conf in ("all", "default"):
                sh("ip", "netns", "exec", ns, "sysctl", "-qw",
                   f"net.ipv6.conf.{conf}.disable_ipv6=1")
        sh("ip", "link", "add", "c0", "netns", sender, "mtu", "9000", "type", "veth",
           "peer", "name", "s0", "netns", tap, "mtu", "9000")
        for ns, dev in ((sender, "c0"), (tap, "s0"), (tap, "lo")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
        for _, path, want, frames in picked:
            log = open(os.path.join(root, "live-agent.log"), "w")
            agent = subprocess.Popen(
                ["ip", "netns", "exec", tap, bin_path, "run", "--iface", "s0", "--no-egress",
                 "--web.listen-address", "127.0.0.1:9437", "--scan-interval", "200ms"],
                stdout=subprocess.DEVNULL, stderr=log)
            try:
                deadline = time.time() + 20
                while scrape(tap) is None:
                    if time.time() > deadline or agent.poll() is not None:
                        sys.exit(f"corpus: the agent did not start (see {log.name})")
                    time.sleep(0.1)
                sent = sh("ip", "netns", "exec", sender, "tcpreplay", "-i", "c0", path,
                          check=False)
                # The 10 ms a SYN-ACK may wait for its SYN, then a scan.
                time.sleep(0.5)
                got = live_counts(scrape(tap) or "")
            finally:
                agent.terminate()
                agent.wait()
                log.close()
            rel = os.path.relpath(path, base)
            # What tcpreplay (libpcap) cannot send whole is not compared: a
            # pcapng of interfaces of several link types, a frame past the MTU.
            m = re.search(r"Actual: (\d+) packets", sent.stdout)
            failed = re.search(r"Failed packets:\s+(\d+)", sent.stdout)
            if not m or int(m.group(1)) != frames or (failed and int(failed.group(1))):
                unsent += 1
                msg = (sent.stdout + sent.stderr).strip().splitlines()
                print(f"live not sent whole {rel}: {m.group(0) if m else msg[-1] if msg else ''}"
                      f" of {frames} frames", flush=True)
                continue
            if got != want:
                failures += 1
                print(f"LIVE-DISAGREE {rel}: " + ", ".join(
                    f"{k} live {got[k]} replay {want[k]}" for k in want if got[k] != want[k]))
            else:
                print(f"live agrees {rel}: " + ", ".join(f"{k}={want[k]}" for k in want),
                      flush=True)
    finally:
        for ns in (sender, tap):
            sh("ip", "netns", "del", ns, check=False)
    total = sum(t[0] for t in picked)
    print(json.dumps({"live_captures": len(picked), "live_disagree": failures,
                      "live_not_sent_whole": unsent, "live_attempts": total}))
    return 1 if failures else 0


def main():
    a = sys.argv[1:]
    if len(a) >= 2 and a[0] == "fetch":
        fetch(a[1])
        return 0
    if len(a) >= 3 and a[0] == "run":
        jobs = int(a[a.index("-j") + 1]) if "-j" in a else 2
        report = a[a.index("--report") + 1] if "--report" in a else None
        return run(a[1], a[2], jobs, report)
    if len(a) >= 3 and a[0] == "live":
        n = int(a[a.index("-n") + 1]) if "-n" in a else 40
        report = a[a.index("--report") + 1] if "--report" in a else os.path.join(a[1], "report.json")
        return live(a[1], a[2], n, report)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
