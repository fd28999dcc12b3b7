-- ffdesk schema 9: node-local hooks in the audit trail (each run: name, phase, argv, exit
-- code, output, seconds).
ALTER TABLE attempts ADD COLUMN hooks jsonb NOT NULL DEFAULT '[]';
