//! Splitting a decided batch into groups that share no stream, so the groups can be appended in parallel
//! transactions (PostgreSQL then uses more than one core) without changing any decision: two commands
//! that read or write a common stream (and so every two commands of one actor, whose own stream is in
//! every read set) land in the same group, in their original order.

use domain::{Decision, StreamId, read_set};
use eventstore::CommandCommit;
use std::collections::HashMap;

/// Indices into `commits`, in ascending order within each group; at most `parts` non-empty groups,
/// balanced by size. One group when nothing can be separated.
pub fn independent_groups(commits: &[CommandCommit], parts: usize) -> Vec<Vec<usize>> {
    let n = commits.len();
    let mut parent: Vec<usize> = (0..n).collect();
    let mut owner: HashMap<StreamId, usize> = HashMap::with_capacity(n * 2);
    for (i, c) in commits.iter().enumerate() {
        let written = match &c.decision {
            Decision::Commit(writes) => writes.iter().map(|w| w.stream.clone()).collect(),
            Decision::Reject(_) => Vec::new(),
        };
        for stream in read_set(&c.envelope).into_iter().chain(written) {
            match owner.get(&stream) {
                Some(&j) => union(&mut parent, i, j),
                None => {
                    owner.insert(stream, i);
                }
            }
        }
    }
    // Components in order of their first command, each to the smallest group so far.
    let mut members: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut order = Vec::new();
    for i in 0..n {
        let root = find(&mut parent, i);
        members
            .entry(root)
            .or_insert_with(|| {
                order.push(root);
                Vec::new()
            })
            .push(i);
    }
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); parts.clamp(1, n.max(1))];
    for root in order {
        let component = members.remove(&root).unwrap_or_default();
        if let Some(smallest) = groups.iter_mut().min_by_key(|g| g.len()) {
            smallest.extend(component);
        }
    }
    for g in &mut groups {
        g.sort_unstable();
    }
    groups.retain(|g| !g.is_empty());
    groups
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

fn union(parent: &mut [usize], a: usize, b: usize) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        // The older command's root wins, so a component's root is its first command.
        let (keep, merge) = if ra < rb { (ra, rb) } else { (rb, ra) };
        parent[merge] = keep;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{Command, CommandEnvelope, CommandId, PostBody, PostId, Streams, UserId, decide};

    fn commit(actor: &str, command: Command) -> CommandCommit {
        let envelope = CommandEnvelope::new(CommandId::new_v7(), UserId::parse(actor).unwrap(), command);
        let decision = decide(&envelope, &Streams::default());
        CommandCommit { envelope, decision }
    }

    fn post(actor: &str, post_id: PostId) -> CommandCommit {
        commit(actor, Command::PublishPost { post_id, body: PostBody::parse("hi").unwrap(), reply_to: None })
    }

    fn new_post(actor: &str) -> CommandCommit {
        post(actor, PostId(uuid::Uuid::now_v7()))
    }

    fn group_of(groups: &[Vec<usize>], i: usize) -> usize {
        groups.iter().position(|g| g.contains(&i)).unwrap()
    }

    #[test]
    fn one_actors_commands_stay_together_and_in_order() {
        let commits =
            vec![new_post("ann"), new_post("bob"), new_post("ann"), new_post("cat"), new_post("ann")];
        let groups = independent_groups(&commits, 2);
        assert_eq!(groups.len(), 2);
        let ann = group_of(&groups, 0);
        assert_eq!(group_of(&groups, 2), ann);
        assert_eq!(group_of(&groups, 4), ann);
        for g in &groups {
            assert!(g.windows(2).all(|w| w[0] < w[1]), "original order kept: {g:?}");
        }
        let all: usize = groups.iter().map(Vec::len).sum();
        assert_eq!(all, commits.len(), "every command in exactly one group");
    }

    #[test]
    fn commands_on_a_shared_stream_stay_together() {
        let shared = PostId(uuid::Uuid::now_v7());
        let like = |actor: &str| commit(actor, Command::LikePost { post_id: shared });
        let follow = |actor: &str, target: &str| {
            commit(actor, Command::FollowUser { target: UserId::parse(target).unwrap() })
        };
        // ann posts `shared`; bob and cat like it; dan follows eve; eve posts.
        let commits =
            vec![post("ann", shared), like("bob"), like("cat"), follow("dan", "eve"), new_post("eve")];
        let groups = independent_groups(&commits, 4);
        let g = group_of(&groups, 0);
        assert_eq!((group_of(&groups, 1), group_of(&groups, 2)), (g, g), "the post and its likes");
        assert_eq!(group_of(&groups, 3), group_of(&groups, 4), "a follow and the followee's post");
        assert_ne!(group_of(&groups, 3), g);
        assert_eq!(groups.len(), 2, "two components, however many parts were allowed");
    }

    #[test]
    fn groups_are_balanced_and_never_empty() {
        let commits: Vec<_> = (0..10).map(|i| new_post(&format!("user{i}"))).collect();
        let groups = independent_groups(&commits, 3);
        let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![4, 3, 3]);
        assert_eq!(independent_groups(&commits, 1), vec![(0..10).collect::<Vec<_>>()]);
        assert!(independent_groups(&[], 2).is_empty());
    }
}
