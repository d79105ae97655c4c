"""The results page plays the matched moment, shows which clip matched which, explains scores."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import unquote, urlparse

from video_fixtures import make_video


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _page(tmp_path):
    from vcl_infer.search.html_report import write_html
    from vcl_infer.search.moments import ClipMatch
    from vcl_infer.search.query import Hit, SearchResult

    odd = tmp_path / 'a <b>&"x\'#1.mp4'  # a name that breaks unescaped HTML, URIs and fragments
    make_video(odd, num_frames=40, fps=10)
    query = tmp_path / "query.mp4"
    make_video(query, num_frames=20, fps=10)
    matches = (ClipMatch(0.0, 1.0, 1.5, 2.5, 0.91), ClipMatch(1.0, 2.0, 2.5, 3.5, 0.87))
    result = SearchResult(query=str(query), results=[Hit(1, str(odd), 0.89, 1.5, 3.5, matches)],
                          query_path=str(query), query_windows=[(0.0, 1.0), (1.0, 2.0)])
    out = write_html(result, tmp_path / "page.html")
    parser = _Tags()
    text = out.read_text()
    parser.feed(text)
    return odd, text, parser


def test_each_hit_plays_its_matched_range_from_the_local_file(tmp_path):
    odd, text, parser = _page(tmp_path)
    videos = [attrs for tag, attrs in parser.tags if tag == "video"]
    assert len(videos) == 2  # the query and the hit
    hit = urlparse(videos[1]["src"])
    assert hit.scheme == "file" and unquote(hit.path) == str(odd.resolve())
    assert hit.fragment == "t=1.50,3.50"
    assert "controls" in videos[1]


def test_the_page_says_which_query_clip_matched_which_clip_and_what_a_score_means(tmp_path):
    _, text, parser = _page(tmp_path)
    words = " ".join(parser.text)
    assert "cosine similarities of L2-normalised" in words and "from -1 to 1" in words
    cells = [t.strip() for t in parser.text if t.strip()]
    assert "0.00\u20131.00 s" in cells and "1.50\u20132.50 s" in cells and "0.9100" in cells
    assert "2.50\u20133.50 s" in cells and "0.8700" in cells


def test_file_names_are_escaped(tmp_path):
    odd, text, parser = _page(tmp_path)
    assert "<b>" not in text
    assert not [t for t, _ in parser.tags if t == "b"]
    assert odd.name in "".join(parser.text)  # shown as text, exactly
