"""Durable state behind one small interface; SQLite is the embedded backend."""
