"""Retrievers as typed components: any `retriever(query, k) -> list[Passage]` fits a program;
`BM25` (local, bm25s) and `ColBERTv2` (a search server) are built in, traced and cached."""

from lmdsl.retrieval.base import Passage, RetrievalRecord, Retriever, retrieve
from lmdsl.retrieval.bm25 import BM25, read_corpus
from lmdsl.retrieval.colbert import ColBERTv2

__all__ = ["BM25", "ColBERTv2", "Passage", "RetrievalRecord", "Retriever", "read_corpus", "retrieve"]
