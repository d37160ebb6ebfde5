"""An index made before chunks had origin columns opens, keeps its chunks and gains the columns."""

from __future__ import annotations

import sqlite3

from retrieval.store import SCHEMA, ChunkStore


def test_old_database_gains_origin_columns_and_keeps_its_chunks(tmp_path) -> None:
    path = tmp_path / "chunks.sqlite"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)  # the layout of the first release: no page/row/ocr columns
    db.execute("INSERT INTO documents(path, source, status) VALUES ('/d/a.md', 'a.md', 'ok')")
    db.execute("INSERT INTO chunks(document_id, position, section, text, content_hash, tokens, embedding)"
               " VALUES (1, 0, 'Intro', 'hello', 'h', 'hello', x'0000803f')")
    db.commit()
    db.close()
    store = ChunkStore(path)
    [chunk] = store.chunks()
    assert (chunk.text, chunk.section, chunk.page, chunk.row_start, chunk.ocr) == ("hello", "Intro", None, None, False)
    store.close()
    columns = {row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(chunks)")}
    assert {"page", "row_start", "row_end", "ocr"} <= columns
    ChunkStore(path).close()  # a second open finds nothing to migrate
