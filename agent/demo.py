"""The bundled demo: a generated sample Maildir and the config that reads it.

``retainer demo`` calls :func:`build_demo`, syncs the result and shows the review queue
and the roster. Everything is generated from a fixed seed, so two builds with the same
``now`` are byte for byte the same, and nothing is downloaded.

The sample is the mailbox of Sam Carter, who runs a small online tea shop and works with
ten freelancers by email: designers, a copywriter, developers, a translator, a
photographer, an illustrator, an SEO writer and a motion designer. Seven of them are on
the seed roster in the config; the other three wrote in but were never added, so they
show up as candidates next to the newsletters and notifications (which must never
become contractors). A few hostile or malformed messages show that bad input is kept,
logged and never written outside the data folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import struct
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING

from agent.files import ensure_private_dir

if TYPE_CHECKING:
    from agent.models import DeliverableRecord, MessageRecord
    from agent.store import Store

SEED = 20260105
OWNER_NAME = "Sam Carter"
OWNER = "sam@brightleaf-tea.example"
OWNER_EMAILS = (OWNER, "orders@brightleaf-tea.example")
SOURCE_NAME = "demo-mail"
CONFIG_NAME = "retainer.toml"
MAILDIR_NAME = "Maildir"
DATA_NAME = "data"
#: What ``configs/demo.toml`` is generated for (``retainer demo --dir ~/retainer-demo``).
EXAMPLE_TARGET = "~/retainer-demo"


# -- people ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    name: str
    email: str
    role: str
    skills: tuple[str, ...]
    kind: str  # which generator makes their deliverables: png, pdf, docx, zip, svg
    seeded: bool
    status: str = "trial"
    rate: float | None = None
    signature_logo: bool = False


CONTRACTORS: tuple[Person, ...] = (
    Person("Maria Lopez", "maria@lopez-studio.example", "brand designer",
           ("logo", "branding", "packaging"), "png", True, "core", 45.0, True),
    Person("Kenji Watanabe", "kenji@pixelfold.example", "UI designer",
           ("ui", "web design", "figma"), "pdf", True, "trial", 55.0),
    Person("Priya Raman", "priya@inkwell-copy.example", "copywriter",
           ("copywriting", "product descriptions", "newsletters"), "docx", True, "core", 40.0),
    Person("Tom Becker", "tom@becker-dev.example", "backend developer",
           ("python", "shopify api", "integrations"), "zip", True, "core", 70.0),
    Person("Aisha Bello", "aisha@bello-codes.example", "frontend developer",
           ("javascript", "css", "landing page"), "zip", True, "trial", 50.0, True),
    Person("Lukas Nowak", "lukas@nowak-translations.example", "translator",
           ("translation", "german", "polish"), "docx", True, "bench", 30.0),
    Person("Sofia Rossi", "sofia@rossi-photo.example", "product photographer",
           ("photography", "retouching"), "png", True, "trial", 35.0),
    Person("Daniel Okafor", "daniel@okafor-media.example", "SEO writer",
           ("seo", "blog posts"), "docx", False),
    Person("Elena Petrova", "elena@petrova-art.example", "illustrator",
           ("illustration", "packaging art"), "svg", False, signature_logo=True),
    Person("Chen Wei", "chen@motionlab.example", "motion designer",
           ("animation", "video"), "zip", False),
)

#: Senders that are not contractors and must stay candidates.
BULK_SENDERS: tuple[tuple[str, str, str], ...] = (
    ("Design Weekly", "news@designweekly.example", "newsletter"),
    ("CloudCart Billing", "billing@cloudcart.example", "invoice"),
    ("Tracker", "notifications@tracker-app.example", "notification"),
    ("Stock Photos Daily", "hello@stockphotos.example", "newsletter"),
    ("Parcel Post", "no-reply@parcelpost.example", "shipping"),
)


@dataclass(frozen=True)
class Project:
    subject: str
    brief: str
    files: tuple[str, ...]  # deliverable file names, in the order they are sent


PROJECTS: dict[str, tuple[Project, ...]] = {
    "Maria Lopez": (
        Project("New logo for the winter blend", "a logo for our winter blend, warm and cosy",
                ("winter-blend-logo-v1.png", "winter-blend-logo-v2.png",
                 "winter-blend-logo-final.png")),
        Project("Tea tin label redesign", "new labels for the three tea tins",
                ("tin-labels-draft.png", "tin-labels-print.pdf")),
        Project("Gift box packaging", "packaging for the holiday gift box",
                ("gift-box-dieline.pdf", "gift-box-mockup.png")),
    ),
    "Kenji Watanabe": (
        Project("Checkout page mockups", "mockups for a simpler checkout page",
                ("checkout-mockups-v1.pdf", "checkout-mockups-v2.pdf")),
        Project("Mobile menu redesign", "a cleaner mobile navigation",
                ("mobile-menu.pdf",)),
    ),
    "Priya Raman": (
        Project("Product descriptions: oolong range",
                "descriptions for the six oolong teas, about 80 words each",
                ("oolong-descriptions-draft.docx", "oolong-descriptions-final.docx")),
        Project("Welcome email sequence", "three welcome emails for new subscribers",
                ("welcome-sequence.docx",)),
        Project("About page rewrite", "a warmer About page",
                ("about-page.docx",)),
    ),
    "Tom Becker": (
        Project("Inventory sync with the warehouse", "nightly stock sync with the warehouse API",
                ("inventory-sync-v1.zip", "inventory-sync-v2.zip")),
        Project("Fix duplicate order emails", "customers get two confirmation emails",
                ("order-email-fix.zip",)),
    ),
    "Aisha Bello": (
        Project("Landing page for the tasting kit", "a one-page site for the tasting kit",
                ("tasting-kit-landing.zip", "tasting-kit-landing-v2.zip")),
        Project("Speed up the product pages", "product pages load slowly on phones",
                ("perf-report.pdf",)),
    ),
    "Lukas Nowak": (
        Project("German translation of the shop", "translate product pages into German",
                ("shop-de.docx",)),
        Project("Polish product labels", "translate the tin labels into Polish",
                ("labels-pl.docx",)),
    ),
    "Sofia Rossi": (
        Project("Product photos: spring collection", "white-background shots of 12 teas",
                ("spring-collection-01.png", "spring-collection-02.png",
                 "spring-collection-03.png")),
        Project("Lifestyle shots for Instagram", "cosy lifestyle photos with the tins",
                ("lifestyle-set.zip",)),
    ),
    "Daniel Okafor": (
        Project("Blog post: how to brew oolong", "a 1200-word guide, SEO friendly",
                ("brew-oolong-guide.docx",)),
        Project("Keyword research for green teas", "keywords we could rank for",
                ("green-tea-keywords.docx",)),
    ),
    "Elena Petrova": (
        Project("Illustrations for the tea tins", "hand-drawn tea leaves for the tins",
                ("tea-leaves.svg", "tea-leaves-colour.svg")),
    ),
    "Chen Wei": (
        Project("Animated logo for social media", "a five-second animated logo",
                ("logo-animation-preview.zip",)),
    ),
}

OWNER_OPENERS = (
    "Hi {first},\n\nI'd like to work with you on {brief}. Budget and deadline are flexible; "
    "could you send a first version by {due}?\n\nThanks,\nSam",
    "Hello {first},\n\nNew job for you: {brief}. Let me know if anything is unclear, and "
    "what you would charge.\n\nBest,\nSam",
    "Hi {first},\n\nNext up: {brief}. Same format as last time would be great.\n\nSam",
)
CONTRACTOR_ACKS = (
    "Hi Sam,\n\nSounds good, I can start tomorrow. I'll send a first version by {due}.\n\n"
    "{first}",
    "Hello Sam,\n\nThanks! Quick question: do you have examples you like? Otherwise I'll "
    "start from our last project.\n\nBest,\n{first}",
    "Hi Sam,\n\nGot it. My estimate is {hours} hours. Starting now.\n\nCheers,\n{first}",
)
CONTRACTOR_DELIVERS = (
    "Hi Sam,\n\nAttached is {file}. Let me know what you think.\n\n{first}",
    "Hello Sam,\n\nHere's {file}, with the changes we discussed.\n\nBest,\n{first}",
    "Hi Sam,\n\nPlease find {file} attached. Happy to do another round.\n\n{first}",
)
OWNER_FEEDBACK = (
    "Thanks {first}! Looks good overall. Could you make it a bit {adjective}?\n\nSam",
    "Great work. Two small things: the {detail} and the spacing at the bottom.\n\nSam",
    "Perfect, thank you. Please send the final files and your invoice.\n\nSam",
)
CONTRACTOR_CLOSES = (
    "Thanks Sam, invoice attached below in the text: {amount} USD. It was a pleasure!\n\n"
    "{first}",
    "Glad you like it! Let me know when you have the next project.\n\n{first}",
)
ADJECTIVES = ("warmer", "simpler", "bolder", "lighter", "more playful", "calmer")
DETAILS = ("colours", "headline", "font size", "second paragraph", "icon", "button")


# -- generated file contents -------------------------------------------------------------------


def png_bytes(rng: random.Random, width: int = 48, height: int = 32) -> bytes:
    """A real (small) PNG: a gradient with a random tint."""
    tint = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    rows = b"".join(
        b"\x00" + b"".join(
            bytes(((x * 5 + c) % 256, (y * 7 + tint[1]) % 256, (tint[2] + x + y) % 256))
            for x, c in ((x, tint[0]) for x in range(width))
        )
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def pdf_bytes(title: str, lines: Sequence[str]) -> bytes:
    """A real one-page PDF showing ``title`` and ``lines``."""

    def esc(text: str) -> str:
        text = text.encode("latin-1", "replace").decode("latin-1")
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    ops = [f"BT /F1 18 Tf 72 760 Td ({esc(title)}) Tj ET"]
    for i, line in enumerate(lines):
        ops.append(f"BT /F1 11 Tf 72 {730 - 16 * i} Td ({esc(line)}) Tj ET")
    stream = "\n".join(ops).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream
        + b"\nendstream",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n"
              "%%EOF\n".encode())
    return out.getvalue()


def zip_bytes(files: dict[str, str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in sorted(files.items()):
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, text)
    return out.getvalue()


def docx_bytes(title: str, paragraphs: Sequence[str]) -> bytes:
    """A minimal but real Word document (Office Open XML)."""

    def para(text: str, style: str = "") -> str:
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        props = f'<w:pPr><w:pStyle w:val="{style}"/></w:pPr>' if style else ""
        return f"<w:p>{props}<w:r><w:t xml:space=\"preserve\">{text}</w:t></w:r></w:p>"

    body = para(title, "Title") + "".join(para(p) for p in paragraphs)
    ns = "http://schemas.openxmlformats.org"
    return zip_bytes({
        "[Content_Types].xml": (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<Types xmlns="{ns}/package/2006/content-types">'
            '<Default Extension="rels" '
            'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/word/document.xml" ContentType="application/'
            'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>'
        ),
        "_rels/.rels": (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<Relationships xmlns="{ns}/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{ns}/officeDocument/2006/relationships/'
            'officeDocument" Target="word/document.xml"/></Relationships>'
        ),
        "word/document.xml": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            f'<w:document xmlns:w="{ns}/wordprocessingml/2006/main"><w:body>{body}'
            "</w:body></w:document>"
        ),
    })


def svg_bytes(rng: random.Random, title: str) -> bytes:
    leaves = "".join(
        f'<ellipse cx="{rng.randrange(20, 180)}" cy="{rng.randrange(20, 120)}" rx="18" ry="8" '
        f'transform="rotate({rng.randrange(0, 180)})" fill="#{rng.randrange(0x305020, 0x60a040):06x}"/>'
        for _ in range(8)
    )
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="200" height="140" '
            f'viewBox="0 0 200 140"><title>{title}</title>{leaves}</svg>\n').encode()


MIME_TYPES = {
    "png": ("image", "png"), "pdf": ("application", "pdf"), "zip": ("application", "zip"),
    "svg": ("image", "svg+xml"),
    "docx": ("application", "vnd.openxmlformats-officedocument.wordprocessingml.document"),
}


def deliverable(rng: random.Random, filename: str, person: Person, project: Project) -> bytes:
    ext = filename.rsplit(".", 1)[-1]
    title = f"{project.subject} - {person.name}"
    if ext == "png":
        return png_bytes(rng, 48 + rng.randrange(0, 32), 32 + rng.randrange(0, 24))
    if ext == "pdf":
        return pdf_bytes(title, [f"Brief: {project.brief}.", f"File: {filename}",
                                 "Prepared for Brightleaf Tea Co."])
    if ext == "docx":
        return docx_bytes(title, [f"Brief: {project.brief}.",
                                  "Draft text follows. " * rng.randrange(3, 8)])
    if ext == "svg":
        return svg_bytes(rng, title)
    stem = filename.rsplit(".", 1)[0]
    return zip_bytes({
        f"{stem}/README.md": f"# {project.subject}\n\n{project.brief}.\n",
        f"{stem}/CHANGES.txt": "\n".join(f"- change {i}" for i in range(rng.randrange(2, 6))),
        f"{stem}/main.{'py' if 'developer' not in person.role else 'js'}":
            "print('hello from the demo')\n" * rng.randrange(1, 4),
    })


# -- messages ----------------------------------------------------------------------------------


@dataclass
class Mail:
    when: datetime
    message: EmailMessage
    folder: str = ""  # "" is INBOX; "Sent" and "Newsletters" are Maildir++ subfolders
    seen: bool = True


@dataclass
class Builder:
    now: datetime
    rng: random.Random
    mails: list[Mail] = field(default_factory=list)
    counter: int = 0

    def message_id(self, domain: str) -> str:
        self.counter += 1
        digest = hashlib.sha1(f"{SEED}-{self.counter}".encode()).hexdigest()[:12]
        return f"<{self.counter:04d}.{digest}@{domain}>"

    def new(self, sender: tuple[str, str], to: tuple[str, str], subject: str, when: datetime,
            body: str, *, reply_to: EmailMessage | None = None) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = f"{sender[0]} <{sender[1]}>"
        msg["To"] = f"{to[0]} <{to[1]}>"
        msg["Subject"] = subject
        msg["Date"] = format_datetime(when)
        msg["Message-ID"] = self.message_id(sender[1].split("@", 1)[1])
        if reply_to is not None:
            parent = str(reply_to["Message-ID"])
            refs = str(reply_to.get("References", "")).split()
            msg["In-Reply-To"] = parent
            msg["References"] = " ".join([*refs, parent])
        msg.set_content(body)
        return msg

    def add(self, msg: EmailMessage, when: datetime, folder: str = "") -> None:
        self.mails.append(Mail(when, msg, folder, seen=(self.now - when) > timedelta(days=2)))


def _first(name: str) -> str:
    return name.split()[0]


def _signature_logo(msg: EmailMessage, person: Person, rng: random.Random) -> None:
    """Add an HTML version with an inline signature image (not a deliverable)."""
    text = msg.get_content()
    cid = f"sig-{person.email.split('@')[0]}@demo"
    html = "".join(f"<p>{line}</p>" for line in text.split("\n") if line)
    html += f'<p><img src="cid:{cid}" alt="{person.name}" width="48" height="16"></p>'
    msg.add_alternative(html, subtype="html")
    html_part = msg.get_body(preferencelist=("html",))
    if not isinstance(html_part, EmailMessage):  # pragma: no cover - we just added it
        return
    html_part.add_related(png_bytes(rng, 24, 8), maintype="image", subtype="png",
                            cid=f"<{cid}>", filename="signature-logo.png",
                            disposition="inline")


def _attach(msg: EmailMessage, filename: str, data: bytes) -> None:
    maintype, subtype = MIME_TYPES[filename.rsplit(".", 1)[-1]]
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)


def _project_thread(b: Builder, person: Person, project: Project, start: datetime) -> None:
    rng = b.rng
    owner = (OWNER_NAME, OWNER)
    them = (person.name, person.email)
    first = _first(person.name)
    when = start
    due = (start + timedelta(days=5)).strftime("%A %d %B")
    opener = b.new(owner, them, project.subject, when,
                   rng.choice(OWNER_OPENERS).format(first=first, brief=project.brief, due=due))
    b.add(opener, when, "Sent")
    when += timedelta(hours=rng.randrange(2, 20), minutes=rng.randrange(60))
    last = b.new(them, owner, f"Re: {project.subject}", when,
                 rng.choice(CONTRACTOR_ACKS).format(first=first, due=due,
                                                    hours=rng.randrange(4, 30)),
                 reply_to=opener)
    b.add(last, when)
    for index, filename in enumerate(project.files):
        when += timedelta(days=rng.randrange(1, 4), hours=rng.randrange(1, 9))
        if when > b.now - timedelta(hours=1):
            return
        delivery = b.new(them, owner, f"Re: {project.subject}", when,
                         rng.choice(CONTRACTOR_DELIVERS).format(first=first, file=filename),
                         reply_to=last)
        if person.signature_logo:
            _signature_logo(delivery, person, rng)
        _attach(delivery, filename, deliverable(rng, filename, person, project))
        b.add(delivery, when)
        last = delivery
        # the owner has not answered the newest deliveries yet: they wait in the queue
        reply_at = when + timedelta(hours=rng.randrange(3, 40))
        if reply_at > b.now - timedelta(days=2):
            return
        final = index == len(project.files) - 1
        feedback = OWNER_FEEDBACK[2] if final else rng.choice(OWNER_FEEDBACK[:2])
        answer = b.new(owner, them, f"Re: {project.subject}", reply_at,
                       feedback.format(first=first, adjective=rng.choice(ADJECTIVES),
                                       detail=rng.choice(DETAILS)), reply_to=last)
        b.add(answer, reply_at, "Sent")
        last = answer
        when = reply_at
    when += timedelta(hours=rng.randrange(2, 30))
    if when < b.now - timedelta(hours=1):
        close = b.new(them, owner, f"Re: {project.subject}", when,
                      rng.choice(CONTRACTOR_CLOSES).format(
                          first=first, amount=rng.randrange(120, 1400)), reply_to=last)
        b.add(close, when)


def _small_talk(b: Builder, person: Person, when: datetime) -> None:
    """A short exchange without files (availability, invoices, holidays)."""
    rng = b.rng
    topics = (
        ("Availability next month", "Hi Sam,\n\nJust so you know, I'm away from the 20th "
         "to the 27th. Anything urgent before that?\n\n{first}", "Thanks for the heads-up, "
         "nothing urgent. Enjoy!\n\nSam"),
        ("Invoice {n}", "Hi Sam,\n\nHere is my invoice {n} for last month: {amount} USD, "
         "payable within 14 days.\n\n{first}", "Paid today, thanks!\n\nSam"),
        ("Quick question", "Hi Sam,\n\nShould I keep using the old colour palette for "
         "new work?\n\n{first}", "Yes please, the new one isn't final yet.\n\nSam"),
    )
    subject, text, answer = rng.choice(topics)
    n = rng.randrange(1000, 9999)
    subject = subject.format(n=n)
    msg = b.new((person.name, person.email), (OWNER_NAME, OWNER), subject, when,
                text.format(first=_first(person.name), n=n, amount=rng.randrange(200, 2500)))
    b.add(msg, when)
    reply_at = when + timedelta(hours=rng.randrange(1, 12))
    if reply_at < b.now:
        b.add(b.new((OWNER_NAME, OWNER), (person.name, person.email), f"Re: {subject}",
                    reply_at, answer, reply_to=msg), reply_at, "Sent")


def _bulk(b: Builder, sender: tuple[str, str, str], when: datetime) -> None:
    rng = b.rng
    name, address, kind = sender
    if kind == "newsletter":
        subject = rng.choice(("This week in design", "10 packaging ideas for spring",
                              "Free stock photos: tea & coffee", "Our favourite fonts of 2026"))
        html = (f"<html><body><h1>{subject}</h1><p>Hand-picked links for you.</p>"
                '<p><a href="https://designweekly.example/unsubscribe">Unsubscribe</a></p>'
                '<img src="https://designweekly.example/pixel.gif" width="1" height="1">'
                "</body></html>")
        msg = b.new((name, address), (OWNER_NAME, OWNER), subject, when,
                    f"{subject}\n\nHand-picked links for you.")
        msg.add_alternative(html, subtype="html")
        msg["List-Unsubscribe"] = "<https://designweekly.example/unsubscribe>"
        b.add(msg, when, "Newsletters")
        return
    if kind == "invoice":
        number = rng.randrange(10000, 99999)
        msg = b.new((name, address), (OWNER_NAME, OWNER), f"Your CloudCart invoice #{number}",
                    when, f"Your monthly plan was renewed. Invoice #{number}: 29.00 USD.")
        msg.add_attachment(pdf_bytes(f"Invoice {number}", ["CloudCart Pro plan: 29.00 USD"]),
                           maintype="application", subtype="pdf",
                           filename=f"invoice-{number}.pdf")
        b.add(msg, when)
        return
    if kind == "shipping":
        order = rng.randrange(1000, 9999)
        b.add(b.new((name, address), (OWNER_NAME, OWNER), f"Parcel for order {order} delivered",
                    when, f"Your parcel for order {order} was delivered."), when)
        return
    task = rng.choice(("Update shipping rates", "Reorder tins", "Renew domain",
                       "Answer wholesale enquiry"))
    b.add(b.new((name, address), (OWNER_NAME, OWNER), f"Reminder: {task}", when,
                f"This is a reminder for your task \"{task}\", due today."), when)


def _hostile(b: Builder) -> None:
    """A few hostile or malformed messages, as real inboxes get them."""
    now = b.now
    tom = CONTRACTORS[3]
    # a contractor's attachment with a path-traversal name: stored under a safe name
    msg = b.new((tom.name, tom.email), (OWNER_NAME, OWNER), "Server config you asked for",
                now - timedelta(days=6, hours=3),
                "Hi Sam,\n\nHere's the config file from the old server.\n\nTom")
    msg.add_attachment(b"root:x:0:0:root:/root:/bin/sh\n", maintype="text", subtype="plain",
                       filename="../../etc/passwd")
    b.add(msg, now - timedelta(days=6, hours=3))
    # HTML with scripts from a stranger: dropped, never run
    when = now - timedelta(days=9)
    spam = b.new(("Cheap SEO", "promo@cheap-seo.example"), (OWNER_NAME, OWNER),
                 "Rank #1 on Google in 7 days!!!", when, "")
    spam.set_content(
        "<html><body><script>document.location='http://127.0.0.1:9/x'</script>"
        "<p>We can get you to the first page.</p><iframe src='http://169.254.169.254/'>"
        "</iframe><img src=x onerror=alert(1)></body></html>", subtype="html")
    b.add(spam, when)
    # a raw malformed message (no MIME boundary, 8-bit header bytes): see raw_hostile()


def raw_hostile(now: datetime) -> list[tuple[datetime, bytes]]:
    """Malformed messages that :mod:`email` would not write for us."""
    when = now - timedelta(days=12, hours=5)
    date = format_datetime(when).encode()
    broken = (
        b"From: Elena Petrova <elena@petrova-art.example>\r\n"
        b"To: Sam Carter <sam@brightleaf-tea.example>\r\n"
        b"Subject: Sketches \xe2\x80\x93 f\xfcr die Dosen\r\n"
        b"Date: " + date + b"\r\n"
        b"Message-ID: <broken-mime.0001@petrova-art.example>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed\r\n\r\n"
        b"--X\r\nContent-Type: text/plain; charset=x-unknown-charset\r\n\r\n"
        b"Hi Sam, the sketches are coming tomorrow. Elena\r\n"
    )
    return [(when, broken)]


def generate(now: datetime) -> list[tuple[datetime, str, bool, bytes]]:
    """Every demo message as ``(date, folder, seen, raw bytes)``, oldest first."""
    b = Builder(now=now, rng=random.Random(SEED))
    rng = b.rng
    for person in CONTRACTORS:
        projects = PROJECTS[person.name]
        span = 75 if person.seeded else 40
        starts = sorted(rng.randrange(3, span) for _ in projects)
        for project, days_ago in zip(projects, reversed(starts), strict=True):
            start = now - timedelta(days=days_ago, hours=rng.randrange(0, 12))
            _project_thread(b, person, project, start.replace(second=0, microsecond=0))
        for _ in range(rng.randrange(2, 6)):
            when = now - timedelta(days=rng.randrange(2, 80), hours=rng.randrange(0, 23))
            _small_talk(b, person, when.replace(second=0, microsecond=0))
    for sender in BULK_SENDERS:
        for _ in range(rng.randrange(15, 22)):
            when = now - timedelta(days=rng.randrange(0, 85), hours=rng.randrange(0, 23),
                                   minutes=rng.randrange(60))
            _bulk(b, sender, when.replace(second=0, microsecond=0))
    _hostile(b)
    out: list[tuple[datetime, str, bool, bytes]] = []
    for mail in b.mails:
        _fix_boundaries(mail.message)
        out.append((mail.when, mail.folder, mail.seen, mail.message.as_bytes()))
    out += [(when, "", False, raw) for when, raw in raw_hostile(now)]
    out.sort(key=lambda item: (item[0], item[3]))
    return out


def _fix_boundaries(msg: EmailMessage) -> None:
    """Deterministic MIME boundaries (the email package picks random ones)."""
    for index, part in enumerate(msg.walk()):
        if part.is_multipart():
            digest = hashlib.sha1(str(msg["Message-ID"]).encode()).hexdigest()[:16]
            part.set_boundary(f"==demo-{digest}-{index}==")


# -- writing the demo --------------------------------------------------------------------------


def write_maildir(root: Path, now: datetime) -> int:
    """Write the sample Maildir under ``root``; return the number of messages."""
    messages = generate(now)
    for folder in ("", ".Sent", ".Newsletters"):
        for sub in ("cur", "new", "tmp"):
            ensure_private_dir(root / folder / sub if folder else root / sub)
    for number, (when, folder, seen, raw) in enumerate(messages):
        directory = root / f".{folder}" if folder else root
        stamp = int(when.timestamp())
        base = f"{stamp}.M{number:04d}P1000.demo"
        path = directory / ("cur" if seen else "new") / (f"{base}:2,S" if seen else base)
        tmp = directory / "tmp" / base
        tmp.write_bytes(raw)
        tmp.chmod(0o600)
        os.utime(tmp, (stamp, stamp))
        tmp.rename(path)
    return len(messages)


def _toml(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def config_text(target: str | Path) -> str:
    """The demo config for a demo built in ``target`` (paths as given)."""
    base = str(target).rstrip("/")
    lines = [
        "# Retainer demo configuration, written by `retainer demo` (agent/demo.py).",
        "# The sample mailbox belongs to Sam Carter, who runs a small online tea shop.",
        "# Seven of the ten freelancers who write to Sam are on the seed roster below; the",
        "# other three, and the newsletters and notifications, are candidates.",
        "",
        "[agent]",
        f"data_dir = {_toml(base + '/' + DATA_NAME)}",
        f"owner_emails = [{', '.join(_toml(e) for e in OWNER_EMAILS)}]",
        "max_attachment_mb = 5",
        'review_overdue = "3d"',
        "# Show all the sample work in the review queue (default: only work after the first sync).",
        "review_since = false",
        "",
    ]
    for person in CONTRACTORS:
        if not person.seeded:
            continue
        lines += [
            "[[contractors]]",
            f"name = {_toml(person.name)}",
            f"emails = [{_toml(person.email)}]",
            f"skills = [{', '.join(_toml(s) for s in person.skills)}]",
            f"status = {_toml(person.status)}",
        ]
        if person.rate is not None:
            lines.append(f"rate = {person.rate}")
        lines.append("")
    lines += [
        "[[sources]]",
        f"name = {_toml(SOURCE_NAME)}",
        'platform = "maildir"',
        'every = "5m"',
        "[sources.settings]",
        f"path = {_toml(base + '/' + MAILDIR_NAME)}",
        "",
    ]
    return "\n".join(lines)


EXAMPLE_HEADER = """\
# configs/demo.toml: what `retainer demo --dir ~/retainer-demo` writes (as retainer.toml in
# that folder), kept here as an example; tests/test_demo.py checks that they match.
#
# `retainer demo` builds the sample Maildir in the folder you name (default: a new
# temporary folder) and writes this config with absolute paths to it:
#   data_dir      = <folder>/data      the store and the deliverable files
#   sources.path  = <folder>/Maildir   the generated sample mailbox
# To use this file as it is: `retainer demo --dir ~/retainer-demo` once, then
# `retainer --config configs/demo.toml sync` (or messages, deliverables, contractors...).

"""


def example_config_text() -> str:
    """The content of ``configs/demo.toml``."""
    return EXAMPLE_HEADER + config_text(EXAMPLE_TARGET)


def build_demo(target_dir: Path, *, now: datetime | None = None) -> Path:
    """Write the sample Maildir and its config into ``target_dir``; return the config path.

    ``now`` anchors the message dates (default: the start of the current hour, so the
    review queue shows realistic ages); the same ``now`` always gives the same bytes.
    The data folder (``target_dir/data``) is where ``retainer sync`` will put the store.
    """
    target_dir = ensure_private_dir(Path(target_dir).expanduser().resolve())
    if now is None:
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    maildir = target_dir / MAILDIR_NAME
    if maildir.exists() and any(maildir.iterdir()):
        from agent.errors import ConfigError

        raise ConfigError(f"{maildir} already exists; pick an empty folder for the demo "
                          "(retainer demo --dir NEW_FOLDER)")
    write_maildir(maildir, now)
    config = target_dir / CONFIG_NAME
    from agent.files import write_private

    write_private(config, config_text(target_dir).encode())
    return config


# -- the owner's history ------------------------------------------------------------------------

#: How good each freelancer's work is (the mean of the demo's ratings).
QUALITY = {"Maria Lopez": 4.7, "Kenji Watanabe": 4.0, "Priya Raman": 4.4, "Tom Becker": 4.8,
           "Aisha Bello": 3.3, "Lukas Nowak": 3.9, "Sofia Rossi": 3.6}
TEMPLATES = (
    ("design-brief", "logo", "{{task}}",
     "# {{task}}\n\nHi {{first_name}},\n\nWhat I need: {{task}}.\n\n- PNG and SVG\n"
     "- our colours (forest green, cream)\n\nPlease reply with the files attached.\n"),
    ("writing-brief", "copywriting", "{{task}}",
     "# {{task}}\n\nHi {{first_name}},\n\nPlease write: {{task}}.\n\n- about 300 words\n"
     "- warm, plain English\n\nA DOCX back in this thread is perfect.\n"),
    ("dev-task", "python", "{{task}}",
     "# {{task}}\n\nHi {{first_name}},\n\nThe job: {{task}}.\n\n- tests included\n"
     "- a short README\n\nSend a ZIP when it is ready.\n"),
)
_TEMPLATE_FOR = {"logo": "design-brief", "ui": "design-brief", "photography": "design-brief",
                 "copywriting": "writing-brief", "translation": "writing-brief",
                 "python": "dev-task", "javascript": "dev-task"}


def seed_history(store: Store, now: datetime | None = None) -> dict[str, int]:
    """Give the synced demo the owner's past work, read off the sample threads.

    Every delivery the owner already answered in its thread becomes a review at the time of
    the answer (approved when the answer says so, else changes requested) with a rating
    and the hours billed; every project's opening brief becomes an instruction sent from a
    template (two versions each). The newest deliveries stay in the review queue. Runs
    once: a store that has reviews or instructions is left alone.
    """
    from agent.store import workflow as wf

    if wf.review_events(store) or wf.sent_instructions(store):
        return {"reviews": 0, "instructions": 0}
    now = now or datetime.now(UTC)
    rng = random.Random(SEED + 1)
    contractors = {c["id"]: c for c in store.contractors()}
    threads: dict[str, list[MessageRecord]] = {}
    for msg in store.iter_messages():
        if msg.get("source") == SOURCE_NAME and msg.get("thread_id"):
            threads.setdefault(str(msg["thread_id"]), []).append(msg)
    for msgs in threads.values():
        msgs.sort(key=lambda m: str(m.get("sent_at") or ""))
    reviews: list[tuple[DeliverableRecord, dict[str, object]]] = []
    recent = iso_days_ago(now, 12)  # the owner's last two weeks are still to be recorded
    for doc in store.deliverables():
        cid = doc.get("contractor_id")
        person = contractors.get(cid or "")
        thread_id = doc["thread_id"]
        if doc.get("source") != SOURCE_NAME or person is None or not thread_id:
            continue
        answers = [m for m in threads.get(thread_id, [])
                   if m["direction"] == "out" and m["sent_at"] > (doc["received_at"] or "")]
        if not answers or str(answers[0]["sent_at"]) > recent:
            continue  # not answered yet, or lately: it waits in the queue
        answer = answers[0]
        approved = "Perfect" in str(answer.get("text") or "")
        mean = QUALITY.get(person["name"], 4.0) - (0 if approved else 0.6)
        rating = max(1, min(5, round(rng.gauss(mean, 0.6))))
        reviews.append((doc, {
            "status": "approved" if approved else "changes_requested", "rating": rating,
            "feedback": "" if approved else "See my notes in the thread.",
            "hours": float(rng.randrange(2, 12)), "cost": None,
            "when": datetime.fromisoformat(str(answer["sent_at"]).replace("Z", "+00:00"))}))
    sent = []
    for msgs in threads.values():
        opener = msgs[0]
        cid = next((m.get("contractor_id") for m in msgs if m.get("contractor_id")), None)
        person = contractors.get(str(cid or ""))
        if person is None or opener.get("direction") != "out" or \
                str(opener.get("subject") or "").lower().startswith("re:"):
            continue
        skill = next((s for s in person.get("skills") or [] if s in _TEMPLATE_FOR), None)
        if skill is None:
            continue
        sent.append((person, _TEMPLATE_FOR[skill], opener))
    with store.writing():
        start = now - timedelta(days=120)
        for index, (name, skill, subject, text) in enumerate(TEMPLATES):
            wf.save_template(store, name, text.replace("- ", "* ", 1), skill=skill,
                             subject=subject, when=start + timedelta(hours=index))
            wf.save_template(store, name, text, when=start + timedelta(days=30, hours=index))
        wf.record_reviews(store, reviews)  # type: ignore[arg-type]
        for person, template, opener in sent:
            current = wf.template(store, template)
            stamp = str(opener["sent_at"])
            version = 1 if stamp < iso_days_ago(now, 90) else 2
            wf.record_instruction(store, {
                "template": template, "version": version, "skill": current.get("skill"),
                "contractor_id": person["id"], "contractor_name": person["name"],
                "task": str(opener.get("subject") or template), "subject": opener.get("subject"),
                "text": current["versions"][version - 1]["text"], "sent": True,
                "source": SOURCE_NAME, "to": opener.get("identity") or "",
                "remote_id": opener.get("remote_id"), "sent_at": stamp})
    return {"reviews": len(reviews), "instructions": len(sent)}


def iso_days_ago(now: datetime, days: int) -> str:
    return (now - timedelta(days=days)).astimezone(UTC).isoformat().replace("+00:00", "Z")


__all__ = ["CONTRACTORS", "OWNER_EMAILS", "build_demo", "config_text", "example_config_text",
           "generate", "seed_history"]
