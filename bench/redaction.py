"""Redaction benchmark (issue #11): a labelled corpus of prompt-like text with emails,
phone numbers, payment cards (Luhn-valid), US SSNs, IBANs (mod-97-valid), IP addresses,
AWS access keys and JWTs inserted at random; Logbook's redactor (bench/src/bin/
redact-bench.rs) and Microsoft Presidio's pattern recognizers (presidio-analyzer from PyPI,
no NLP model) run over the same lines. Prints MB/s and recall per kind for both.

    bench/redaction.sh   (sets up the venv and builds)
"""
import json
import os
import random
import subprocess
import sys
import time

random.seed(11)
WORDS = "please summarize the quarterly report for the customer and send it to the team before friday".split()


def luhn_complete(prefix):
    for d in range(10):
        n = prefix + str(d)
        s = 0
        for i, c in enumerate(reversed(n)):
            v = int(c)
            if i % 2 == 1:
                v *= 2
                if v > 9:
                    v -= 9
            s += v
        if s % 10 == 0:
            return n


def iban():
    bban = "".join(random.choice("0123456789") for _ in range(18))
    country = "DE"
    num = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    check = 98 - num % 97
    return f"{country}{check:02d}{bban}"


def entity(kind):
    r = random.randint
    if kind == "email":
        return f"{random.choice(['jane','bob','li.wei','o.kafor'])}{r(1,999)}@{random.choice(['example.com','corp.example.org','mail.test.io'])}"
    if kind == "phone":
        return random.choice([f"+1 {r(200,999)}-{r(200,999)}-{r(1000,9999)}", f"({r(200,999)}) {r(200,999)}-{r(1000,9999)}", f"+44 20 {r(1000,9999)} {r(1000,9999)}"])
    if kind == "card":
        p = random.choice(["4", "51", "37"])
        c = luhn_complete(p + "".join(str(r(0, 9)) for _ in range(15 - len(p))))
        return " ".join(c[i:i + 4] for i in range(0, 16, 4))
    if kind == "ssn":
        return f"{r(100,665):03d}-{r(1,99):02d}-{r(1,9999):04d}"
    if kind == "iban":
        return iban()
    if kind == "ip":
        return f"{r(1,223)}.{r(0,255)}.{r(0,255)}.{r(1,254)}"
    if kind == "aws_key":
        return "AKIA" + "".join(random.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))
    if kind == "jwt":
        import base64
        b = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
        return f"{b({'alg':'HS256','typ':'JWT'})}.{b({'sub':str(r(1,10**6)),'name':'x'})}.{''.join(random.choice('abcdefghijklmnopqrstuvwxyz0123456789_-') for _ in range(43))}"


KINDS = ["email", "phone", "card", "ssn", "iban", "ip", "aws_key", "jwt"]


def corpus(n_lines):
    lines, labels = [], []
    for _ in range(n_lines):
        words = [random.choice(WORDS) for _ in range(random.randint(60, 200))]
        lab = []
        for _ in range(random.randint(0, 2)):
            k = random.choice(KINDS)
            v = entity(k)
            words.insert(random.randint(0, len(words)), v)
            lab.append((k, v))
        lines.append(" ".join(words))
        labels.append(lab)
    return lines, labels


def presidio(lines, labels):
    import tldextract
    offline = tldextract.TLDExtract(suffix_list_urls=())
    tldextract.extract = offline  # no network: the bundled public suffix list
    from presidio_analyzer.predefined_recognizers import (CreditCardRecognizer, EmailRecognizer, IbanRecognizer,
                                                          IpRecognizer, PhoneRecognizer, UsSsnRecognizer)
    recs = [EmailRecognizer(), PhoneRecognizer(), CreditCardRecognizer(), UsSsnRecognizer(), IbanRecognizer(), IpRecognizer()]
    kinds = {"EMAIL_ADDRESS": "email", "PHONE_NUMBER": "phone", "CREDIT_CARD": "card", "US_SSN": "ssn",
             "IBAN_CODE": "iban", "IP_ADDRESS": "ip"}
    t = time.perf_counter()
    spans = []
    for line in lines:
        found = []
        for r in recs:
            found += [(x.start, x.end) for x in r.analyze(line, entities=r.supported_entities, nlp_artifacts=None)]
        spans.append(found)
    secs = time.perf_counter() - t
    hit, n = {}, {}
    for line, lab, found in zip(lines, labels, spans):
        for k, v in lab:
            n[k] = n.get(k, 0) + 1
            s = line.index(v)
            if any(a <= s and b >= s + len(v) - 1 for a, b in found):
                hit[k] = hit.get(k, 0) + 1
    return secs, {k: hit.get(k, 0) / n[k] for k in sorted(n) if k in kinds.values()}


def main():
    n = int(os.environ.get("LINES", "20000"))
    work = os.environ.get("WORK", "/tmp/logbook-redaction")
    os.makedirs(work, exist_ok=True)
    lines, labels = corpus(n)
    text = "\n".join(lines) + "\n"
    with open(f"{work}/corpus.txt", "w") as f:
        f.write(text)
    with open(f"{work}/labels.json", "w") as f:
        json.dump(labels, f)
    mb = len(text.encode()) / 1e6
    ours = json.loads(subprocess.run([sys.argv[1], f"{work}/corpus.txt", f"{work}/labels.json"], capture_output=True,
                                     text=True, check=True).stdout)
    sample = int(os.environ.get("PRESIDIO_LINES", str(n)))
    secs, recall = presidio(lines[:sample], labels[:sample])
    pmb = len(("\n".join(lines[:sample]) + "\n").encode()) / 1e6
    print(f"corpus: {n} lines, {mb:.1f} MB, {sum(len(l) for l in labels)} labelled values")
    print(f"logbook redact: {ours['mb_per_s']:.1f} MB/s; recall " + ", ".join(f"{k} {v:.3f}" for k, v in ours["recall"].items()))
    print(f"presidio pattern recognizers: {pmb / secs:.2f} MB/s ({sample} lines); recall " + ", ".join(f"{k} {v:.3f}" for k, v in recall.items()))
    print(f"ratio: {ours['mb_per_s'] / (pmb / secs):.0f}x")


if __name__ == "__main__":
    main()
