//! The adaptive strategy: splits each iteration's candidates between
//! reseeding, reprompting and refining, by what the best candidate's checks
//! allow and by how often each action has beaten the job's best so far.

use std::collections::BTreeMap;

use redraft_proto::{Action, Job};

use super::{Budget, CandidatePlan, Decision, JobView, Strategy};

/// Largest share of failed prompt-part checks at which a draft is still
/// worth refining. Above it the draft is mostly wrong, so new drafts do better.
pub const MAX_REFINE_FAILED_FRACTION: f32 = 0.5;

/// Order in which actions win ties: correcting first, reseeding last.
const ORDER: [Action; 3] = [Action::Reprompt, Action::Refine, Action::Reseed];

/// Chooses reseed, reprompt or refine for each candidate from the best
/// candidate's checks and from what earlier iterations gained.
pub struct Adaptive;

/// How often candidates of one action beat the job's best score at the time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Record {
    tries: u32,
    wins: u32,
}

impl Record {
    /// Win rate with one prior win and one prior loss (Laplace's rule), so an
    /// untried action starts at 0.5 and one bad try does not rule it out.
    fn rate(self) -> f32 {
        (self.wins as f32 + 1.0) / (self.tries as f32 + 2.0)
    }
}

/// Counts the tries and wins of each action over the iterations after the
/// first. A candidate wins when its score beats the job's best before its
/// iteration.
fn records(job: &Job) -> BTreeMap<i32, Record> {
    let mut records = BTreeMap::new();
    for pair in job.iterations.windows(2) {
        let best_before = pair[0].best_score;
        for candidate in &pair[1].candidates {
            let Some(critique) = &candidate.critique else {
                continue;
            };
            let record: &mut Record = records.entry(candidate.action).or_default();
            record.tries += 1;
            if critique.score > best_before {
                record.wins += 1;
            }
        }
    }
    records
}

/// Splits `count` candidates between `allowed` actions. Each candidate goes
/// to the action with the highest win rate divided by one more than the
/// candidates it already has. So better actions get more, and none gets all
/// unless it is the only one allowed.
fn allocate(count: u32, allowed: &[Action], records: &BTreeMap<i32, Record>) -> Vec<Action> {
    let mut given: BTreeMap<i32, u32> = BTreeMap::new();
    let mut actions = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let mut choice = allowed[0];
        let mut choice_value = f32::MIN;
        for action in allowed {
            let rate = records
                .get(&(*action as i32))
                .copied()
                .unwrap_or_default()
                .rate();
            let value = rate / (1.0 + given.get(&(*action as i32)).copied().unwrap_or(0) as f32);
            if value > choice_value {
                choice = *action;
                choice_value = value;
            }
        }
        *given.entry(choice as i32).or_default() += 1;
        actions.push(choice);
    }
    actions
}

fn action_word(action: Action) -> &'static str {
    match action {
        Action::Reseed => "reseed",
        Action::Reprompt => "reprompt",
        Action::Refine => "refine",
        Action::Unspecified => "unspecified",
    }
}

impl Strategy for Adaptive {
    fn decide(&self, job: &Job, budget: Budget) -> Decision {
        let view = JobView::new(job, budget);
        if job.iterations.is_empty() {
            return view.reseed_all(view.first_reason());
        }
        let Some((best, findings)) = view.best_findings() else {
            return view.reseed_all("no candidate was judged yet: draw new seeds".to_string());
        };
        if findings.quality_failed {
            return view.reseed_all(
                "the best candidate failed an image quality check: draw new seeds".to_string(),
            );
        }
        if findings.failed.is_empty() {
            return view.reseed_all(
                "the best candidate passes every prompt-part check but scores below the threshold overall: draw new seeds"
                    .to_string(),
            );
        }

        // Pick the actions the findings allow, then split the candidates.
        let mut allowed = vec![Action::Reprompt];
        if findings.failed_fraction() <= MAX_REFINE_FAILED_FRACTION {
            allowed.push(Action::Refine);
        }
        allowed.push(Action::Reseed);
        let records = records(job);
        let actions = allocate(view.count, &allowed, &records);

        let candidates: Vec<CandidatePlan> = actions
            .iter()
            .zip(0..)
            .map(|(action, index)| match action {
                Action::Reprompt => view.reprompt(index, &findings),
                Action::Refine => view.refine(index, best, &findings),
                _ => view.reseed(index),
            })
            .collect();

        // The iteration's action is the most common one, ties going by ORDER.
        let count_of = |action: Action| actions.iter().filter(|chosen| **chosen == action).count();
        let mut action = Action::Reseed;
        for candidate in ORDER.into_iter().rev() {
            if count_of(candidate) >= count_of(action) {
                action = candidate;
            }
        }
        let split: Vec<String> = ORDER
            .iter()
            .filter(|action| count_of(**action) > 0)
            .map(|action| format!("{} {}", count_of(*action), action_word(*action)))
            .collect();
        let history: Vec<String> = ORDER
            .iter()
            .filter_map(|action| {
                let record = records.get(&(*action as i32))?;
                Some(format!(
                    "{} beat the best {} of {}",
                    action_word(*action),
                    record.wins,
                    record.tries
                ))
            })
            .collect();
        let history = if history.is_empty() {
            String::new()
        } else {
            format!("; so far {}", history.join(", "))
        };
        Decision {
            action,
            reason: format!(
                "the best candidate fails {}{history}: {}",
                findings.describe(),
                split.join(", ")
            ),
            candidates,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::tests::{count_failure, job, push_iteration};
    use redraft_proto::{Check, CheckKind};

    fn actions(decision: &Decision) -> Vec<Action> {
        decision.candidates.iter().map(|plan| plan.action).collect()
    }

    fn presence_passed() -> Check {
        Check {
            kind: CheckKind::Presence as i32,
            passed: true,
            score: 0.9,
            ..Default::default()
        }
    }

    #[test]
    fn first_iteration_reseeds() {
        let decision = Adaptive.decide(&job("two red circles", 3), Budget { spent: 0, left: 8 });
        assert_eq!(actions(&decision), vec![Action::Reseed; 3]);
    }

    #[test]
    fn untried_actions_share_candidates() {
        let mut job = job("a photo of two red circles", 3);
        push_iteration(
            &mut job,
            Action::Reseed,
            &[0.3, 0.5, 0.4],
            &[count_failure(), presence_passed()],
        );
        let decision = Adaptive.decide(&job, Budget { spent: 3, left: 5 });
        assert_eq!(
            actions(&decision),
            vec![Action::Reprompt, Action::Refine, Action::Reseed]
        );
        assert_eq!(decision.action, Action::Reprompt);
        assert!(
            decision.reason.contains("1 reprompt, 1 refine, 1 reseed"),
            "{}",
            decision.reason
        );
        assert_eq!(
            decision.candidates[0].prompt,
            "a photo of (two red circles:1.3)"
        );
        assert!(decision.candidates[1].init.is_some());
        assert_eq!(decision.candidates[2].prompt, "a photo of two red circles");
    }

    #[test]
    fn mostly_wrong_draft_is_not_refined() {
        let mut job = job("a photo of two red circles", 2);
        // One failed check of one: above the refine limit.
        push_iteration(&mut job, Action::Reseed, &[0.3, 0.5], &[count_failure()]);
        let decision = Adaptive.decide(&job, Budget { spent: 2, left: 6 });
        assert_eq!(actions(&decision), vec![Action::Reprompt, Action::Reseed]);
    }

    #[test]
    fn winning_action_gets_more_candidates() {
        let mut job = job("a photo of two red circles", 4);
        let checks = [count_failure(), presence_passed()];
        push_iteration(&mut job, Action::Reseed, &[0.3, 0.3, 0.3, 0.3], &checks);
        // Refine beat the best twice; reprompt and reseed never did.
        let mut second = job.clone();
        push_iteration(&mut second, Action::Refine, &[0.5, 0.6], &checks);
        let refined = second.iterations.pop().unwrap();
        push_iteration(&mut second, Action::Reprompt, &[0.1, 0.1], &checks);
        let reprompted = second.iterations.pop().unwrap();
        push_iteration(&mut second, Action::Reseed, &[0.2], &checks);
        let mut iteration = second.iterations.pop().unwrap();
        iteration.candidates.extend(refined.candidates);
        iteration.candidates.extend(reprompted.candidates);
        iteration.best_score = 0.6;
        job.iterations.push(iteration);
        job.best_score = 0.6;

        let records = records(&job);
        assert_eq!(
            records[&(Action::Refine as i32)],
            Record { tries: 2, wins: 2 }
        );
        assert_eq!(
            records[&(Action::Reprompt as i32)],
            Record { tries: 2, wins: 0 }
        );
        assert_eq!(
            records[&(Action::Reseed as i32)],
            Record { tries: 1, wins: 0 }
        );

        let split = allocate(
            4,
            &[Action::Reprompt, Action::Refine, Action::Reseed],
            &records,
        );
        let refines = split.iter().filter(|a| **a == Action::Refine).count();
        assert_eq!(refines, 2, "{split:?}");
        assert_eq!(split[0], Action::Refine);
    }

    #[test]
    fn quality_failure_reseeds_all() {
        let mut job = job("a red circle", 2);
        let broken = Check {
            kind: CheckKind::Quality as i32,
            passed: false,
            ..Default::default()
        };
        push_iteration(
            &mut job,
            Action::Reseed,
            &[0.0, 0.0],
            &[broken, count_failure()],
        );
        let decision = Adaptive.decide(&job, Budget { spent: 2, left: 2 });
        assert_eq!(actions(&decision), vec![Action::Reseed; 2]);
    }
}
