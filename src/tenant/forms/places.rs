//! 選択肢ごとの定員: an option of a question (a session of a class, a day of a
//! tour) accepts at most so many applications, counted as the form's 定員 is.
//!
//! `option_places` holds each limited option's capacity and the places taken;
//! `submission_places` which application holds which (only limited options are
//! named there, in clear as the form definition names them; the answers stay
//! sealed). Submitting takes places in the submission's transaction, a correction
//! gives its old ones back and takes the new ones, withdrawing, rejecting and
//! deleting give them back, and publishing counts them again (reading the
//! applications again, decrypting only the limited questions' answers, when it
//! limits an option that was not limited before). Every writer locks the options'
//! rows in one order (form, question, option).

use super::answers::{Answer, Answers, FieldError};
use super::definition::{FieldKind, FormDefinition};
use crate::crypto::field::FieldCipher;
use crate::error::AppError;
use std::collections::BTreeMap;
use tokio_postgres::GenericClient;
use uuid::Uuid;

/// A limited option as it stands now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub field: String,
    pub option: String,
    pub capacity: i32,
    pub taken: i32,
}

impl Place {
    pub fn left(&self) -> i32 {
        (self.capacity - self.taken).max(0)
    }
}

/// Said on a question when an option chosen has no place left.
pub fn full_message(option: &str) -> String {
    format!("「{option}」は定員に達しました。別の選択肢を選んでください")
}

/// The options chosen in `answers` for the choice questions of `def`, as two
/// parallel lists (question ids, options) for `unnest`.
pub fn picks(def: &FormDefinition, answers: &Answers) -> (Vec<String>, Vec<String>) {
    let mut fields = Vec::new();
    let mut options = Vec::new();
    for f in def.fields() {
        if !matches!(
            f.kind,
            FieldKind::Choice { .. } | FieldKind::MultiChoice { .. }
        ) {
            continue;
        }
        let chosen: Vec<&String> = match answers.get(&f.id) {
            Some(Answer::Choice(o)) => vec![o],
            Some(Answer::Multi(os)) => os.iter().collect(),
            _ => continue,
        };
        for o in chosen {
            fields.push(f.id.clone());
            options.push(o.clone());
        }
    }
    (fields, options)
}

/// The limited options of a form and their places taken.
pub async fn now(db: &impl GenericClient, form: i64) -> Result<Vec<Place>, AppError> {
    Ok(db
        .query(
            "SELECT field_id, option, capacity, taken FROM option_places WHERE form_id = $1",
            &[&form],
        )
        .await?
        .iter()
        .map(|r| Place {
            field: r.get(0),
            option: r.get(1),
            capacity: r.get(2),
            taken: r.get(3),
        })
        .collect())
}

/// Errors for the options chosen that have no place left, as things stand (the
/// confirmation step and the send check before storing; storing decides). Places
/// `holder` holds (the application a correction replaces) count as its own.
pub async fn full(
    db: &impl GenericClient,
    form: i64,
    def: &FormDefinition,
    answers: &Answers,
    holder: Option<Uuid>,
) -> Result<Vec<FieldError>, AppError> {
    if !def.has_limits() {
        return Ok(Vec::new());
    }
    let (fields, options) = picks(def, answers);
    let rows = db
        .query(
            "SELECT o.field_id, o.option FROM option_places o
               JOIN unnest($2::text[], $3::text[]) AS p (field_id, option) USING (field_id, option)
              WHERE o.form_id = $1 AND o.taken >= o.capacity
                AND NOT EXISTS (SELECT 1 FROM submission_places s WHERE s.submission_id = $4
                                   AND s.field_id = o.field_id AND s.option = o.option)",
            &[&form, &fields, &options, &holder],
        )
        .await?;
    Ok(errors(
        rows.iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1))),
    ))
}

/// One error per question, naming its options that are full.
pub fn errors(full: impl IntoIterator<Item = (String, String)>) -> Vec<FieldError> {
    let mut by_field: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (field, option) in full {
        by_field.entry(field).or_default().push(option);
    }
    by_field
        .into_iter()
        .map(|(field, options)| FieldError {
            input: field.clone(),
            field,
            message: full_message(&options.join("」「")),
        })
        .collect()
}

/// Takes a place for each limited option chosen, for `submission`, in the caller's
/// transaction. The options' rows are locked in one order, so two applications
/// choosing the same options wait for each other instead of deadlocking. Returns
/// the options that had no place left (and then takes none: the caller rolls back).
pub async fn take(
    tx: &tokio_postgres::Transaction<'_>,
    form: i64,
    submission: Uuid,
    picks: &(Vec<String>, Vec<String>),
) -> Result<Vec<(String, String)>, AppError> {
    if picks.0.is_empty() {
        return Ok(Vec::new());
    }
    let locked = tx
        .query(
            "SELECT o.field_id, o.option, o.taken < o.capacity FROM option_places o
               JOIN unnest($2::text[], $3::text[]) AS p (field_id, option) USING (field_id, option)
              WHERE o.form_id = $1 ORDER BY o.field_id, o.option FOR UPDATE OF o",
            &[&form, &picks.0, &picks.1],
        )
        .await?;
    let full: Vec<(String, String)> = locked
        .iter()
        .filter(|r| !r.get::<_, bool>(2))
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if !full.is_empty() || locked.is_empty() {
        return Ok(full);
    }
    let fields: Vec<String> = locked.iter().map(|r| r.get(0)).collect();
    let options: Vec<String> = locked.iter().map(|r| r.get(1)).collect();
    tx.execute(
        "WITH took AS (
           UPDATE option_places o SET taken = o.taken + 1
             FROM unnest($2::text[], $3::text[]) AS p (field_id, option)
            WHERE o.form_id = $1 AND o.field_id = p.field_id AND o.option = p.option
           RETURNING o.field_id, o.option)
         INSERT INTO submission_places (submission_id, form_id, field_id, option)
         SELECT $4, $1, field_id, option FROM took",
        &[&form, &fields, &options, &submission],
    )
    .await?;
    Ok(Vec::new())
}

/// A correction's places: those `submission` holds are given back and those of its
/// corrected answers taken, every row involved locked first in one order (giving
/// back, then taking, would lock in two). Returns the options that had no place
/// left (the caller rolls back).
pub async fn retake(
    tx: &tokio_postgres::Transaction<'_>,
    form: i64,
    submission: Uuid,
    picks: &(Vec<String>, Vec<String>),
) -> Result<Vec<(String, String)>, AppError> {
    tx.execute(
        "SELECT 1 FROM option_places o
          WHERE o.form_id = $1
            AND ((o.field_id, o.option) IN (SELECT * FROM unnest($2::text[], $3::text[]))
                 OR (o.field_id, o.option) IN (SELECT field_id, option FROM submission_places
                                                WHERE submission_id = $4))
          ORDER BY o.field_id, o.option FOR UPDATE OF o",
        &[&form, &picks.0, &picks.1, &submission],
    )
    .await?;
    release(tx, submission).await?;
    take(tx, form, submission, picks).await
}

/// Gives back every place `submission` holds (withdrawn, rejected, or corrected
/// before it takes its new ones), in the caller's transaction, rows locked in the
/// same order as [`take`] locks them.
pub async fn release(tx: &impl GenericClient, submission: Uuid) -> Result<(), AppError> {
    tx.execute(
        "WITH held AS (
           DELETE FROM submission_places WHERE submission_id = $1
           RETURNING form_id, field_id, option
         ), locked AS (
           SELECT o.form_id, o.field_id, o.option FROM option_places o
             JOIN held h USING (form_id, field_id, option)
            ORDER BY o.field_id, o.option FOR UPDATE OF o
         )
         UPDATE option_places o SET taken = o.taken - 1 FROM locked l
          WHERE o.form_id = l.form_id AND o.field_id = l.field_id AND o.option = l.option
            AND o.taken > 0",
        &[&submission],
    )
    .await?;
    Ok(())
}

/// Counts a form's places again for the version being published, in the publish's
/// transaction (submissions already locked against writes): every limited option
/// of `def` gets its capacity and the places taken of it. When every option limited
/// now was limited before, the places held are already listed and are counted as
/// listed (a query); otherwise the applications that still hold a place (not
/// withdrawn or rejected) are read again, decrypting only the limited questions'
/// answers, and the list is made anew. Refused when an option would have more
/// applications than its new capacity, or when there are applications to read and
/// no `cipher` to read them with.
pub async fn recount(
    tx: &tokio_postgres::Transaction<'_>,
    cipher: Option<&FieldCipher>,
    form: i64,
    def: &FormDefinition,
    freed: &[&str],
) -> Result<(), AppError> {
    let before: std::collections::BTreeSet<(String, String)> = tx
        .query(
            "SELECT field_id, option FROM option_places WHERE form_id = $1",
            &[&form],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let limits: Vec<(&super::definition::Field, &String, i32)> = def
        .fields()
        .flat_map(|f| {
            f.kind
                .limits()
                .iter()
                .map(move |(o, cap)| (f, o, i32::try_from(*cap).unwrap_or(i32::MAX)))
        })
        .collect();
    if limits.is_empty() && before.is_empty() {
        // Never limited, and not now: nothing is listed.
        return Ok(());
    }
    let listed = limits
        .iter()
        .all(|(f, o, _)| before.contains(&(f.id.clone(), (*o).clone())));
    tx.execute("DELETE FROM option_places WHERE form_id = $1", &[&form])
        .await?;
    let mut taken: BTreeMap<(String, String), i32> = BTreeMap::new();
    if listed {
        // Places of options no longer limited are no longer held.
        let (fs, os): (Vec<String>, Vec<String>) = limits
            .iter()
            .map(|(f, o, _)| (f.id.clone(), (*o).clone()))
            .unzip();
        tx.execute(
            "DELETE FROM submission_places p WHERE p.form_id = $1
                AND (p.field_id, p.option) NOT IN (SELECT * FROM unnest($2::text[], $3::text[]))",
            &[&form, &fs, &os],
        )
        .await?;
        for r in tx
            .query(
                "SELECT field_id, option, count(*)::int FROM submission_places WHERE form_id = $1
                  GROUP BY field_id, option",
                &[&form],
            )
            .await?
        {
            taken.insert((r.get(0), r.get(1)), r.get(2));
        }
    } else {
        tx.execute("DELETE FROM submission_places WHERE form_id = $1", &[&form])
            .await?;
        taken = read_again(tx, cipher, form, def, freed).await?;
    }
    let mut limit_fields = Vec::new();
    let mut limit_options = Vec::new();
    let mut capacities = Vec::new();
    let mut counts = Vec::new();
    for (f, o, cap) in limits {
        let n = taken.get(&(f.id.clone(), o.clone())).copied().unwrap_or(0);
        if n > cap {
            return Err(AppError::BadRequest(format!(
                "項目「{}」の選択肢「{o}」の定員を、既にこの選択肢を選んだ申請の件数（{n}件）より少なくすることはできません。",
                f.label
            )));
        }
        limit_fields.push(f.id.clone());
        limit_options.push(o.clone());
        capacities.push(cap);
        counts.push(n);
    }
    tx.execute(
        "INSERT INTO option_places (form_id, field_id, option, capacity, taken)
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::int[], $5::int[])",
        &[&form, &limit_fields, &limit_options, &capacities, &counts],
    )
    .await?;
    Ok(())
}

/// Lists anew the places the applications hold that still hold one, from their
/// sealed answers (only the limited questions' are read and decrypted); returns the
/// places taken of each limited option.
async fn read_again(
    tx: &tokio_postgres::Transaction<'_>,
    cipher: Option<&FieldCipher>,
    form: i64,
    def: &FormDefinition,
    freed: &[&str],
) -> Result<BTreeMap<(String, String), i32>, AppError> {
    let mut taken = BTreeMap::new();
    let limited: Vec<String> = def
        .fields()
        .filter(|f| !f.kind.limits().is_empty())
        .map(|f| f.id.clone())
        .collect();
    if limited.is_empty() {
        return Ok(taken);
    }
    let rows = tx
        .query(
            "SELECT id, (SELECT coalesce(jsonb_object_agg(key, value), '{}') FROM jsonb_each(answers) WHERE key = ANY($2))
               FROM submissions WHERE form_id = $1 AND status <> ALL($3)",
            &[&form, &limited, &freed],
        )
        .await?;
    if rows.is_empty() {
        return Ok(taken);
    }
    let Some(cipher) = cipher else {
        return Err(AppError::BadRequest(RECOUNT_NEEDS_KEY.into()));
    };
    let mut holders: Vec<Uuid> = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    for r in &rows {
        let id: Uuid = r.get(0);
        let answers = super::citizen::decrypt_answers(cipher, id, &r.get(1))?;
        let (fs, os) = picks(def, &answers);
        for (f, o) in fs.into_iter().zip(os) {
            let limited = def
                .field(&f)
                .is_some_and(|field| field.kind.limits().contains_key(&o));
            if limited {
                *taken.entry((f.clone(), o.clone())).or_default() += 1;
                holders.push(id);
                fields.push(f);
                options.push(o);
            }
        }
    }
    tx.execute(
        "INSERT INTO submission_places (submission_id, form_id, field_id, option)
         SELECT s, $1, f, o FROM unnest($2::uuid[], $3::text[], $4::text[]) AS p (s, f, o)",
        &[&form, &holders, &fields, &options],
    )
    .await?;
    Ok(taken)
}

/// Said when a form with 選択肢ごとの定員 and applications is published without the
/// municipality's data key at hand (only the admin screen publishes those).
pub const RECOUNT_NEEDS_KEY: &str = "選択肢ごとの定員のあるフォームは、管理画面から公開してください / a form with option limits and applications is published from the admin screen";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_name_each_option_chosen_of_choice_questions_only() {
        let def = FormDefinition::from_json(
            r#"{"format": "madoguchi.form/1", "title": "講座", "pages": [{"id": "p1", "fields": [
                {"id": "session", "type": "choice", "label": "回", "options": ["午前", "午後"], "limits": {"午前": 2}},
                {"id": "extra", "type": "multi_choice", "label": "追加", "options": ["見学", "昼食"]},
                {"id": "name", "type": "text", "label": "名前"}]}]}"#,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let mut answers = Answers::new();
        answers.insert("session".into(), Answer::Choice("午前".into()));
        answers.insert(
            "extra".into(),
            Answer::Multi(vec!["見学".into(), "昼食".into()]),
        );
        answers.insert("name".into(), Answer::Text("午前".into()));
        let (fields, options) = picks(&def, &answers);
        assert_eq!(fields, ["session", "extra", "extra"]);
        assert_eq!(options, ["午前", "見学", "昼食"]);
        assert!(def.has_limits());
    }

    #[test]
    fn one_error_per_question_names_every_full_option() {
        let errors = errors([
            ("b".to_owned(), "2日".to_owned()),
            ("a".to_owned(), "午前".to_owned()),
            ("b".to_owned(), "3日".to_owned()),
        ]);
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].field, "a");
        assert_eq!(errors[1].message, full_message("2日」「3日"));
        assert!(errors[1]
            .message
            .contains("「2日」「3日」は定員に達しました"));
    }
}
