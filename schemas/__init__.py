"""Table declarations and migrations, shipped as package data so installs find them."""

from pathlib import Path

ROOT = Path(__file__).parent
TABLES_DIR = ROOT / "tables"
MIGRATIONS_DIR = ROOT / "migrations"
SQL_DIR = ROOT / "sql"
