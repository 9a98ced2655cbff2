-- 0013 audit schema comment: the schema's description names the document an auditor reads
-- (docs/auditors.md), which ships with the repository; 0001 pointed to a design file that
-- does not. Applied migrations are never edited (their checksums are verified), so the
-- comment is replaced here.

SET ROLE gm_owner;

COMMENT ON SCHEMA audit IS 'gridmeter auditors'' views (role gm_auditor, read-only): stable columns, documented in docs/auditors.md';

RESET ROLE;
