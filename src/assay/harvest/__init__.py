"""Stage I: crawl and clean (WARC/HTML extraction, language ID, quality filters, dedup, PII, decontamination)."""
