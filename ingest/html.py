"""HTML to Markdown-ish text: the page's main content only, tables as Markdown tables, in linear time.

Main-content extraction is a readability-style rule of our own rather than trafilatura. trafilatura was
tried (2.3): on full pages it drops navigation well, but on short pages (a heading, a table and a list:
most intranet pages and our fixtures) it falls back to its baseline extractor, which flattens a table to one
cell per line and loses the headings, and it returns the link texts of an all-navigation page as if they
were content. The rule here is deterministic and keeps tables whole:
- the content root is `<main>`, else `[role=main]`, else the single `<article>`, else `<body>`;
- `<nav>`, `<header>`, `<footer>`, `<aside>`, `<form>` and elements whose id/class/role names a menu, table
  of contents, breadcrumb, sidebar, cookie banner or skip link are dropped with everything inside;
- a list whose text is mostly link text (>= 3 links, >= 80% of its characters) is a link list (a table of
  contents or "related pages") and is dropped too;
- a page left with no text is refused as navigation only.

Nesting depth is measured first by one linear scan of the tags (`nesting_depth`): a page nested deeper than
`max_depth` is refused with a named error before any parser sees it (BeautifulSoup's tree walks are
proportional to depth per node, so 200,000 nested <div>s would otherwise take about an hour).
"""

from __future__ import annotations

import re

from .tables import markdown_table

DROP_TAGS = ["script", "style", "noscript", "template", "svg", "canvas", "iframe", "object", "head"]
CHROME_TAGS = ["nav", "header", "footer", "aside", "form", "button", "dialog"]
_BLOCK_TAGS = ["p", "div", "section", "article", "main", "ul", "ol", "dl", "dt", "dd", "pre", "blockquote",
               "figure", "figcaption", "fieldset", "address", "details", "summary", "hr", "caption"]
_CHROME_NAME = re.compile(r"(?:^|[\s_-])(?:nav|navbar|navigation|menu|menubar|toc|table-of-contents|breadcrumbs?|"
                          r"sidebar|side-bar|cookie|cookies|banner|skip|skiplink|masthead|site-header|"
                          r"site-footer|pagination|pager|share|social|navheader|navfooter)(?:$|[\s_-])", re.I)
# navheader/navfooter: DocBook's HTML (the Debian manuals, many Linux and GNU manuals)
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9:-]*)([^<>]*?)(/?)>|<!--.*?-->|<!\[CDATA\[.*?\]\]>", re.S)
_VOID = frozenset("area base br col embed hr img input link meta param source track wbr".split())
_RAW = frozenset({"script", "style", "textarea", "title"})
_OPTIONAL_END = frozenset("p li dt dd tr td th thead tbody tfoot option optgroup rb rt rtc rp colgroup".split())
NAV_ONLY = "no main content: the page holds only navigation (menus, links, header/footer)"


class NavigationOnly(ValueError):
    """The page has text, but all of it is navigation, header, footer or link lists."""


class TooDeep(ValueError):
    """The markup nests deeper than the limit (carries the depth found)."""

    def __init__(self, depth: int, limit: int) -> None:
        super().__init__(f"HTML nested more than {limit} elements deep (found {depth}); "
                         "over the limit (RAGTUNE_MAX_HTML_DEPTH)")
        self.depth, self.limit = depth, limit


def nesting_depth(markup: str, limit: int) -> int:
    """The deepest element nesting in `markup`, scanning each tag once; raises TooDeep past `limit`.

    Void elements and elements whose end tag HTML lets authors omit (p, li, td...) do not count, so
    sloppy but ordinary HTML is not mistaken for deep nesting. A close tag pops back to its opener.
    """
    stack: list[str] = []
    open_count: dict[str, int] = {}
    deepest = 0
    for match in _TAG.finditer(markup):
        closing, name = match.group(1), (match.group(2) or "").lower()
        if not name or name in _VOID or name in _OPTIONAL_END or match.group(4):
            continue
        if closing:
            if open_count.get(name):
                while stack:
                    top = stack.pop()
                    open_count[top] -= 1
                    if top == name:
                        break
        elif name not in _RAW:
            stack.append(name)
            open_count[name] = open_count.get(name, 0) + 1
            if len(stack) > deepest:
                deepest = len(stack)
                if deepest > limit:
                    raise TooDeep(deepest, limit)
    return deepest


def _is_chrome(tag) -> bool:
    """Page furniture by name: id, class or ARIA role says navigation, TOC, banner and the like."""
    attrs = getattr(tag, "attrs", None) or {}
    role = str(attrs.get("role", "")).lower()
    if role in ("navigation", "banner", "contentinfo", "complementary", "search", "menu", "menubar"):
        return True
    names = " ".join([str(attrs.get("id", ""))] + list(attrs.get("class", []) or []))
    return bool(names.strip()) and bool(_CHROME_NAME.search(names))


def _is_link_list(tag) -> bool:
    """A list that is mostly links: a table of contents or a 'related pages' block."""
    links = tag.find_all("a")
    if len(links) < 3:
        return False
    total = len(tag.get_text("", strip=True))
    linked = sum(len(a.get_text("", strip=True)) for a in links)
    return total > 0 and linked >= 0.8 * total


def _content_root(soup):
    """`<main>`, `[role=main]`, the one `<article>`, or the body: where the page's own text lives."""
    main = soup.find("main") or soup.find(attrs={"role": "main"})
    if main is not None:
        return main
    articles = soup.find_all("article")
    if len(articles) == 1:
        return articles[0]
    return soup.body or soup


def _table_markdown(table) -> str:
    """An HTML table (nested tables flattened into their cell) as a Markdown table."""
    rows = []
    for tr in table.find_all("tr"):
        if tr.find_parent("table") is not table:
            continue
        rows.append([c.get_text(" ", strip=True) for c in tr.find_all(["td", "th"], recursive=False)])
    return markdown_table(rows)


def _strip_chrome(root) -> None:
    """Drop furniture (by tag, by name) and link lists from the content root."""
    for tag in root.find_all(CHROME_TAGS):
        tag.decompose()
    for tag in [t for t in root.find_all(True) if t.attrs and _is_chrome(t)]:
        if not tag.decomposed:
            tag.decompose()
    for tag in root.find_all(["ul", "ol"]):
        if not tag.decomposed and _is_link_list(tag):
            tag.decompose()


def html_to_text(markup: str, *, max_depth: int = 256) -> str:
    """Convert an HTML page's main content to Markdown-ish text; '' when only navigation is left.

    h1-h6 become '#' lines, tables Markdown tables, list items '- ' lines; scripts and styles are
    dropped. Raises TooDeep for markup nested deeper than `max_depth` and NavigationOnly for a page
    whose only text is page furniture.
    """
    from bs4 import BeautifulSoup, Comment, Declaration, Doctype, NavigableString, ProcessingInstruction

    nesting_depth(markup, max_depth)
    soup = BeautifulSoup(markup, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup.find_all(DROP_TAGS):
        tag.decompose()
    for special in soup.find_all(string=lambda s: isinstance(s, (Comment, Declaration, Doctype,
                                                                   ProcessingInstruction))):
        special.extract()
    root = _content_root(soup)
    had_text = bool(soup.get_text("", strip=True))
    _strip_chrome(root)
    for s in root.find_all(string=True):
        if type(s) is NavigableString and s.find_parent("pre") is None and s.parent is not None:
            s.replace_with(re.sub(r"\s+", " ", str(s)))
    for table in root.find_all("table"):
        if table.find_parent("table") is None and table.parent is not None:
            table.replace_with("\n\n" + _table_markdown(table) + "\n\n")
    for pre in root.find_all("pre"):  # fenced, so a "# root prompt" line is not a heading
        if pre.find_parent("pre") is None and pre.parent is not None:
            code = pre.get_text().strip("\n")
            pre.replace_with(f"\n\n```\n{code}\n```\n\n" if code.strip() else "\n\n")
    headings = root.find_all(re.compile(r"^h[1-6]$"))
    for h in headings:
        text = h.get_text(" ", strip=True)
        h.replace_with(f"\n\n{'#' * int(h.name[1])} {text}\n\n" if text else "\n\n")
    for br in root.find_all("br"):
        br.replace_with("\n")
    for li in root.find_all("li"):
        li.insert(0, "- ")
        li.insert_after("\n")
    for block in root.find_all(_BLOCK_TAGS):
        block.insert_before("\n\n")
        block.insert_after("\n\n")
    text = "\n".join(line.strip() for line in root.get_text().split("\n"))
    if not re.sub(r"[#\s]", "", text):
        if had_text:
            raise NavigationOnly(NAV_ONLY)
        return ""
    if title and not any(h.name == "h1" for h in headings):
        text = f"# {title}\n\n{text}"
    return text
