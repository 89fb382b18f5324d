-- Automatic approvals and remembered decisions (workflows/grants.py). An approval decided by 'policy' or
-- 'remembered' was given without asking anyone; `grant_id` names the remembered decision that approved it, and
-- `remembered_as` the one a human approval created. Both are also in each approval_events snapshot.
ALTER TABLE approvals ADD COLUMN grant_id text;
ALTER TABLE approvals ADD COLUMN remembered_as text;
CREATE INDEX approvals_grant_id_idx ON approvals (grant_id) WHERE grant_id IS NOT NULL;
CREATE INDEX approvals_decided_by_idx ON approvals (decided_by);
