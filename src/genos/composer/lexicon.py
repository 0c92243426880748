"""The composer's vocabulary: which words mean which wish.

Tables are regular expressions over folded text (see ``normalise``). A tuple
of patterns is searched for evidence (:func:`first` returns the words that
matched); a mapping of value -> pattern picks a value (:func:`pick`). Order
matters: more specific patterns come first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cache


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@cache
def lexicon_words() -> frozenset[str]:
    """Every word the tables below spell out: never a slip to correct ("sketchy")."""
    found: set[str] = set()
    for value in globals().values():
        items = value.values() if isinstance(value, dict) else value
        if isinstance(value, (tuple, dict, frozenset)):
            for item in items:
                if isinstance(item, str):
                    found.update(re.findall(r"[a-z]{3,}", item))
    return frozenset(found)


def first(patterns: Sequence[str], text: str) -> str | None:
    """The words of the first pattern that matches ``text``, or None."""
    for pattern in patterns:
        found = _compiled(pattern).search(text)
        if found:
            return found.group(0)
    return None


def pick(table: Mapping[str, str], text: str) -> str | None:
    """The value whose pattern matches ``text`` first (table order), or None."""
    for value, pattern in table.items():
        if _compiled(pattern).search(text):
            return value
    return None


# Network wishes. NET_NONE says "no network" by itself; a NET_MENTION says
# nothing until the language layer tells whether it is negated ("it should not
# have internet") or, for NET_INTERNET, asked for.
NET_NONE = (
    r"\bair[ -]?gapped\b",
    r"\boffline\b",
    r"\bdisconnected\b",
    r"\bisolated from (?:the )?(?:internet|network|net|web|outside world)\b",
    r"\bnetwork[ -]isolated\b|\bnetworkless\b|\bno[ -]network\b",
    r"\bloopback only\b|\blocalhost only\b",
)
NET_MENTION = (
    r"\b(?:internet|internets|interwebs|network(?:ing)?|net|web|wifi|wi-fi|wlan|lan|ethernet|"
    r"connectivity|connections?|online|outbound|outgoing|traffic|outside world|"
    r"outside access|egress)\b",
    r"\bphon\w*\s+home\b|\bcall\w*\s+home\b|\b(?:push|sync|exfiltrat|upload)\w*\b",
    r"\b(?:talk|reach|connect|send|leak)\w*\s+(?:to\s+|out\s+to\s+)?(?:the\s+)?"
    r"(?:internet|outside|world|anything|anyone|anywhere|web|out)\b",
    r"\bbrows\w*\b",
)
NET_TOR = (
    r"\bvia tor\b|\bthrough tor\b|\bover tor\b|\btor network\b|\btor only\b|\bonly tor\b",
    r"\banonym\w*(?: (?:brows|surf)\w*)?\b",
    r"\buntraceable\b|\bwithout (?:anybody|anyone|someone) tracking\b|\bnot be(?:ing)? tracked\b",
    r"\bsecure(?:ly)? brows\w*\b|\bprivate(?:ly)? brows\w*\b|\bbrows\w* (?:privately|securely)\b",
    r"\bonion\b|\.onion\b|\bdark ?web\b|\bdarknet\b|\bwhonix\b",
    r"\bhide my (?:ip|identity|location)\b",
    r"\btor\b",
)
NET_INTERNET = (
    r"\binternet(?: access| connection)?\b",
    r"\bonline\b",
    r"\b(?:web|network|outbound|net) access\b",
    r"\bwi-?fi\b",
    r"\bdownload\w* (?:stuff|things|packages|files) from\b",
)
BROWSE_WEB = (
    r"\bbrows\w* (?:the |some )?(?:web|internet|websites?|sites?|online|net)\b",
    r"\b(?:surf|surfing) (?:the )?(?:web|internet|net)\b",
    r"\bweb browsing\b",
    r"\bvisit\w* (?:web)?sites?\b",
    r"\b(?:go|get) online\b",
    r"\b(?:see|watch|visit|open|use|check)\w* (?:youtube|netflix|facebook|gmail|twitter|instagram|"
    r"reddit|wikipedia|tiktok)\b",
    r"\bbrows(?:e|ing)\b(?!\s+(?:the |my |some |through |local )?(?:files?|folders?|photos|"
    r"pictures|images|code|documents|books|music|archives?|database|directories)\b)",
)
OS_NAMES = {
    "windows": r"\bwindows\b(?! manager)|\bwin ?(?:xp|7|8|10|11)\b",
    "macos": r"\bmac\s?os\b|\bos ?x\b|\bmacbook\b|\bsonoma\b|\bventura\b|\bmonterey\b",
    "ubuntu": r"\bubuntu\b|\bkubuntu\b|\bxubuntu\b",
    "fedora": r"\bfedora\b",
    "arch": r"\barch linux\b|\barchlinux\b|\bmanjaro\b",
    "centos": r"\bcentos\b|\brhel\b|\bred hat\b|\brocky linux\b|\balmalinux\b",
    "opensuse": r"\bopensuse\b|\bsuse\b",
    "kali": r"\bkali\b",
    "alpine": r"\balpine\b",
    "mint": r"\blinux mint\b",
    "freebsd": r"\bfreebsd\b|\bopenbsd\b",
    "android": r"\bandroid(?! studio)\b",
    "chromeos": r"\bchrome ?os\b",
}
PROTOCOLS = {
    "rdp": r"\brdp\b|\bremote desktop protocol\b|\bxrdp\b|\bfreerdp\b|\bmstsc\b",
    "spice": r"\bspice\b|\bremote-viewer\b|\bvirt-viewer\b",
    "vnc": r"\bvnc\b|\bnovnc\b",
}
TIERS = {
    "microvm": r"\bmicro[ -]?vms?\b|\bfirecracker\b",
    "gvisor": r"\bgvisor\b|\brunsc\b|\buser[ -]?space kernel\b",
    "vm": (
        r"\bvirtual machines?\b|\bvms?\b|\bfull (?:os|operating system|linux system)\b"
        r"|\bsystemd\b|\bkernel modules?\b|\bown kernel\b|\bcustom kernel\b|\bqemu\b|\bkvm\b"
    ),
    "container": r"\bcontainers?\b",
}
# The owner's own disk image, registered with `genos images add`: group 1 is
# its name ("boot my windows image win-test", "run the iso called rescue").
USER_IMAGE = (
    r"\b(?:my|our|own|registered|user)\s+(?:[a-z0-9.]+\s+){0,2}?"
    r"(?:disk image|vm image|os image|image|iso|qcow2)\s+(?:(?:named|called)\s+)?"
    r"['\"]?([a-z0-9][a-z0-9-]*)",
    r"\b(?:boot|run|start|launch)\s+(?:up\s+)?(?:the\s+)?(?:disk\s+)?(?:image|iso)\s+"
    r"(?:(?:named|called)\s+)?['\"]?([a-z0-9][a-z0-9-]*)",
)
# Words after "my image" that are not a name ("my image editor", "my image files").
NOT_IMAGE_NAMES = frozenset(
    """
    a an the and or with for in on of to from into using that which please file files
    editor editors viewer viewers
    """.split()
)
TIER_HINTS = (
    r"\bmalware\b|\bmalicious\b|\bvirus(?:es)?\b|\bransomware\b|\btrojan\b|\bexploits?\b",
    r"\bsuspicious\b|\buntrusted\b|\bsketchy\b|\bdodgy\b|\binfected\b|\bphishing\b",
    r"\bfishy\b|\bshady\b|\bscammy\b",
    r"\bunknown\b(?: [\w.]+)? (?:files?|attachments?|binar(?:y|ies)|executables?|exe|documents?|"
    r"programs?|usb|links?|e-?mails?|scripts?)\b",
    r"\b(?:don'?t|do not|can'?t|cannot) trust\b|\bnot trusted\b|\bbooby[- ]?trapped\b",
    r"\b(?:weird|strange|shady|fishy|questionable|unsolicited|scam\w*|spam|supposedly|"
    r"unexpected) (?:\w+ )?(?:pdf|files?|attachments?|e-?mails?|links?|documents?|programs?|"
    r"apps?|extensions?|scripts?|usb|downloads?|executables?|exe|zip|docx?)s?\b",
    r"\bdetonat\w*\b|\breverse[ -]engineer\w*\b",
)
WINDOW_MANAGERS = {
    "xfce": r"\bxfce4?\b|\bxubuntu\b",
    "icewm": r"\bicewm\b",
    "fluxbox": r"\bfluxbox\b",
    "openbox": r"\bopenbox\b",
}
HEADLESS = (
    r"\bheadless\b",
    r"\bno (?:desktop|gui|graphical)\b",
    r"\b(?:cli|command[ -]line|terminal|console)[ -]only\b",
)
PERSIST = (
    r"\b(?:keep|save|safe|store)s? (?:my |the |our |all (?:my |the )?)?(?:files|data|work|stuff|"
    r"documents|home|settings|progress|bookmarks|library|projects?|notes|config)\b",
    r"\bkeeps? everything\b",
    r"\bkeep(?:s|ing)? (?:my|our|all (?:of )?my|all the) (?!internet|network|net|clipboard|"
    r"connection|wifi)[a-z]+\b",
    r"\bpersist\w*\b",
    r"\b(?:between|across) sessions\b",
    r"\b(?:don'?t|do not|never) (?:want to )?lose\b|\bwithout losing\b",
    r"\bsurvive\w* (?:restarts?|reboots?)\b",
    r"\bvolume\b",
)
# Under a negation these ask for nothing to be kept ("don't save anything").
NO_KEEP = (r"\b(?:sav\w*|keep\w*|stor(?:e|ing|ed)|persist\w*|remember\w*)\b",)
EPHEMERAL = (
    r"\bthrow[ -]?away\b",
    r"\bdisposable\b",
    r"\bephemeral\b",
    r"\btemporary\b|\btemp env\w*\b",
    r"\bkeep nothing\b|\bleave no trace\b|\bwipe\w* (?:it |everything )?after\b",
    r"\bone[ -]off\b|\bburner\b",
)
ENCRYPTED = (r"\bencrypt\w*\b",)
ESCALATION = (
    r"\bmount\w*\s+(?:the\s+)?(?:host|server|machine)'?s?\b",
    r"\bhost'?s?\s+(?:root|/|filesystem|file system|disk|home|files|network|devices?|kernel)",
    r"\b(?:--)?privileged\b",
    r"\bcap_[a-z_]+\b|\bsys_admin\b|\ball (?:linux )?capabilities\b|\bextra capabilit\w*\b",
    r"\b(?:--net=host|network=host|host network\w*|share the host\w*)",
    r"\bdocker\.sock\b|/var/run/docker|/proc/1/root|/dev/mem\b|\bdocker (?:daemon )?socket\b",
    r"\b(?:kernel modules?|drivers?) on the host\b|\bthe host'?s? kernel\b",
    r"\b(?:disable|turn off|remove|bypass|without)\s+(?:the\s+)?"
    r"(?:sandbox\w*|seccomp|apparmor|isolation|security)\b",
    r"\b(?:root|admin) (?:access )?on the host\b|\baccess (?:to )?the host\b",
    r"\bescape (?:the )?(?:sandbox|container|vm)\b",
)
INJECTION = (
    r"\bignore (?:all |any )?(?:the )?(?:previous|prior|above|earlier|your) "
    r"(?:instructions?|rules?|prompts?)\b",
    r"\b(?:system prompt|developer mode|jailbreak)\b",
    r"\byou are now\b",
)
# "reach a windows server", "rdp into my work pc": another machine, not the base.
REMOTE_TARGET = (
    r"\b(?:reach\w*|connect\w*|access\w*|remote\w*|rdp|vnc|ssh|log\w*\s+in(?:to)?|login|"
    r"manag\w*|administer\w*|control\w*)\b[^.;!?]{0,40}?\b(?:a|an|the|my|our|his|her|"
    r"their|some|work|office|home|remote)\s+(?:[\w-]+\s+){0,2}?(?:windows|mac|macos|ubuntu|"
    r"fedora|centos|rhel|linux|debian)?\s*(?:server|machine|pc|box|computer|laptop|"
    r"desktop|workstation)s?\b",
)
# What makes a remote target a remote *desktop* (a client app), not an ssh session.
REMOTE_DESKTOP = r"\b(?:rdp|vnc|remote desktop|remote control|windows|mac|macos|desktop)\b"
REMOTE_CLIENT = (
    r"\b(?:rdp|vnc|remote desktop|remote control)\s+(?:in)?to\b(?!\s+(?:it|this|the "
    r"(?:env\w*|box|vm|sandbox|desktop)))",
    r"\bremote desktop (?:client|viewer|connection|session)s? (?:to|into|with)\b",
)
ENV_NOUNS = frozenset(
    """
    linux debian desktop environment env environments vm vms machine box sandbox
    terminal shell workspace session computer os container microvm instance workstation
    system setup server lab playground bookworm trixie gui distro distribution pc laptop
    xfce openbox
    """.split()
)
TLDS = frozenset(
    """
    com org net io dev edu gov mil int info biz app ai co uk de fr nl eu us ca au jp ch
    se no fi dk at be it es pl cz ru cn in br mx onion cloud tech xyz me tv gg
    """.split()
)
# Words the speller may correct a slip to ("internets", "pasword", "persistant").
VOCABULARY = frozenset(
    """
    internet network offline online clipboard browser browse persistent persistence
    encrypted encrypt headless desktop sandbox container virtual machine anonymous
    anonymously private privately secure securely isolated disposable temporary
    throwaway ephemeral password manager player editor editing video music audio photo
    photos picture pictures office document documents spreadsheet presentation
    install please without with connection disabled enabled learn learning program
    programming development develop drawing draw paint painting record recording
    """.split()
)
