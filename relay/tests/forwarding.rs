//! Three meetings of five participants publish audio and video; every subscriber must
//! receive every object of every other participant in its meeting, byte-identical, in
//! order within each group, and nothing from another meeting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use orelay_proto::media::FLAG_KEYFRAME;
use orelay_proto::ParticipantId;

const MEETINGS: u32 = 3;
const PER_MEETING: usize = 5;
const GROUPS: u64 = 3;
const OBJECTS_PER_GROUP: u64 = 10;
const AUDIO_PACKETS: u64 = 60;

/// (publisher, track, group, object) → payload matched the expected bytes.
type Received = Arc<Mutex<BTreeMap<(ParticipantId, u64, u64, u64), bool>>>;

fn video_len(object: u64) -> usize {
    if object == 0 {
        6_000
    } else {
        700 + (object as usize * 97) % 1_500
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_receives_every_object_of_its_meeting_only() {
    let (relay, client) = start(config());
    let mut sessions = Vec::new();
    for m in 0..MEETINGS {
        for i in 0..PER_MEETING {
            let s = client
                .join(
                    relay.addr,
                    &meeting_id(m),
                    "open sesame",
                    &[m as u8, i as u8],
                )
                .await
                .unwrap();
            sessions.push((m, s));
        }
    }
    for (_, s) in &mut sessions {
        s.publish(AUDIO).await.unwrap();
        s.publish(VIDEO).await.unwrap();
    }
    // Everyone subscribes to everything the others publish, and starts receiving.
    let mut received = Vec::new();
    for (m, s) in &mut sessions {
        let tracks = await_tracks(s, (PER_MEETING - 1) * 2).await;
        for (publisher, info) in tracks {
            s.subscribe(publisher, info.track, 0).await.unwrap();
        }
        let log: Received = Arc::default();
        let media = s.media();
        let (meeting, video_log) = (*m, log.clone());
        tokio::spawn(async move {
            while let Ok(mut group) = media.accept_group().await {
                let log = video_log.clone();
                tokio::spawn(async move {
                    let h = group.header;
                    let mut expected_object = 0;
                    while let Ok(Some(obj)) = group.next_object().await {
                        // In order within the group, keyframe first, then byte-identical.
                        let in_order = obj.header.object == expected_object;
                        let flagged = obj.header.is_keyframe() == (expected_object == 0);
                        expected_object += 1;
                        let want = payload(
                            meeting,
                            h.publisher,
                            h.track,
                            h.group,
                            obj.header.object,
                            video_len(obj.header.object),
                        );
                        log.lock().unwrap().insert(
                            (h.publisher, h.track, h.group, obj.header.object),
                            in_order && flagged && obj.payload == want,
                        );
                    }
                });
            }
        });
        let media = s.media();
        let audio_log = log.clone();
        tokio::spawn(async move {
            while let Ok((h, data)) = media.read_audio().await {
                let want = payload(meeting, h.publisher, h.track, h.group, h.object, 120);
                audio_log
                    .lock()
                    .unwrap()
                    .insert((h.publisher, h.track, h.group, h.object), data == want);
            }
        });
        received.push((*m, s.participant(), log));
    }
    // Subscriptions are processed in microseconds on loopback; leave ample margin.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut publishers = Vec::new();
    for (m, s) in &sessions {
        let (m, media) = (*m, s.media());
        publishers.push(tokio::spawn(async move {
            let me = media_participant(&media);
            let video = async {
                for g in 0..GROUPS {
                    let mut w = media
                        .open_group(VIDEO.track, g, 0, VIDEO.priority)
                        .await
                        .unwrap();
                    for o in 0..OBJECTS_PER_GROUP {
                        let flags = if o == 0 { FLAG_KEYFRAME } else { 0 };
                        let data = payload(m, me, VIDEO.track, g, o, video_len(o));
                        let h = w.next_header(flags, data.len());
                        w.write(h, data).await.unwrap();
                        tokio::time::sleep(Duration::from_millis(15)).await;
                    }
                    w.finish();
                }
            };
            let audio = async {
                for seq in 0..AUDIO_PACKETS {
                    let h = media.audio_header(AUDIO.track, 0, seq, AUDIO.priority);
                    media
                        .send_audio(&h, &payload(m, me, AUDIO.track, 0, seq, 120))
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            tokio::join!(video, audio);
        }));
    }
    for p in publishers {
        p.await.unwrap();
    }

    let per_publisher = GROUPS * OBJECTS_PER_GROUP + AUDIO_PACKETS;
    let expected = per_publisher as usize * (PER_MEETING - 1);
    let all_in = eventually(Duration::from_secs(10), || {
        received
            .iter()
            .all(|(_, _, log)| log.lock().unwrap().len() >= expected)
    })
    .await;
    for (m, me, log) in &received {
        let log = log.lock().unwrap();
        assert!(
            all_in,
            "meeting {m} participant {me} received {} of {expected} objects",
            log.len()
        );
        assert_eq!(
            log.len(),
            expected,
            "meeting {m} participant {me}: extra objects"
        );
        assert!(
            log.values().all(|ok| *ok),
            "meeting {m} participant {me}: object out of order, mis-flagged, corrupt or from another meeting"
        );
        assert!(
            log.keys().all(|(publisher, ..)| publisher != me),
            "received its own media"
        );
    }
    let stats = relay.stats.snapshot();
    assert_eq!(stats.groups_dropped, 0, "no subscriber here is slow");
    // Every group is counted in once and out once per subscriber, and so are its bytes
    // (the writers count just after quinn took a chunk, so wait for the last of them).
    let groups = u64::from(MEETINGS) * PER_MEETING as u64 * GROUPS;
    assert_eq!(stats.groups_in, groups);
    assert_eq!(stats.groups_out, groups * (PER_MEETING as u64 - 1));
    let counted = eventually(Duration::from_secs(5), || {
        let s = relay.stats.snapshot();
        s.stream_bytes_in > 0 && s.stream_bytes_out == s.stream_bytes_in * (PER_MEETING as u64 - 1)
    })
    .await;
    assert!(counted, "{:?}", relay.stats.snapshot());
    assert_eq!(stats.meetings_active, MEETINGS as i64);
    for (_, s) in sessions {
        s.leave().await.unwrap();
    }
    assert!(
        eventually(Duration::from_secs(5), || relay
            .stats
            .snapshot()
            .meetings_active
            == 0)
        .await
    );
    relay.shutdown().await;
}

fn media_participant(media: &orelay_client::Media) -> ParticipantId {
    media.participant()
}
