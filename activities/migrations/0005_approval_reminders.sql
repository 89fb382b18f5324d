-- Approval reminders and escalations (workflows/reminders.py): when a pending approval is (or was) reminded of and
-- escalated, as its policy rule set them when it was asked. Also in each approval_events snapshot.
ALTER TABLE approvals ADD COLUMN remind_at timestamptz;
ALTER TABLE approvals ADD COLUMN escalate_at timestamptz;
